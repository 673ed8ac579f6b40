"""The board side (host/, energy/) imports and runs with no torch installed."""
import os
import subprocess
import sys

from conftest import ROOT

NO_TORCH = "import sys; sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"


def run_without_torch(code):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_board_module_imports_without_torch():
    r = run_without_torch(
        "import importlib, pkgutil, contract, host, energy, e2t\n"
        "for pkg in (contract, host, energy, e2t):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print('ok')\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_board_loads_data_without_torch():
    r = run_without_torch("from host.data.datasets import load_dataset, train_batches\n"
                          "ds = load_dataset('digits')\n"
                          "x, y = next(train_batches(ds, 8, 0, 0))\n"
                          "print(x.shape, x.dtype)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(8, 1, 32, 32) float32"


def test_torch_backend_without_torch_is_one_clear_line():
    r = run_without_torch("from e2t.cli import main; sys.exit(main(['train', '--dataset', 'digits']))")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("e2t: error: the torch backend needs PyTorch")
    assert len(r.stderr.strip().splitlines()) == 1


def test_engine_emulation_runs_without_torch():
    """The emulated overlay of the host driver loads the engine's CPU builds: no torch there either."""
    r = run_without_torch("import numpy as np\n"
                          "from contract import cycles\nfrom hls import boards, csim, regmap\n"
                          "e = csim.Engine('native', log=lambda m: None)\n"
                          "y, r, st = e.conv_fwd(np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), 1, 1)\n"
                          "print(int(y[0, 0, 1, 1]), st['status'])\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "18 0"


def test_board_side_never_imports_the_workstation_side():
    """Not even lazily inside a function: host/ and energy/ reach workstation backends through
    entry points (contract/backends.py), so no import statement names them."""
    import ast
    banned = {"torch", "reference", "onnx", "onnxruntime", "hls4ml", "hls"}
    found = []
    for pkg in ("contract", "host", "energy", "e2t"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                for node in ast.walk(ast.parse(open(path).read(), path)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                        [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
                    found += [f"{os.path.relpath(path, ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in banned]
    assert not found, found


def test_info_without_torch_is_one_clear_line():
    r = run_without_torch("from e2t.cli import main; sys.exit(main(['info']))")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("e2t: error: e2t info needs PyTorch")
    assert len(r.stderr.strip().splitlines()) == 1
