"""Imports point down the layers of ARCHITECTURE.md, read from every module's AST (imports inside
functions included: a lazy import hides a loop, it does not remove it).

    contract (1)  <  host, energy (2)  <  e2t, the app (3)  <  hls, reference, bitstreams (4, workstation)

Fails on a cycle between modules; an import that runs up the layers, or across layer 2 (host and
energy know only the contract, not each other); the board side (contract, host, energy, e2t)
importing torch, onnx, onnxruntime, onnxscript, hls4ml, reference/ or hls/.
``python tests/test_layers.py [ROOT]`` prints what it finds, one ``file:line`` a line.
"""
from __future__ import annotations

import ast
import os
import sys

ROOT = os.environ.get("E2T_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"contract": 1, "host": 2, "energy": 2, "e2t": 3, "hls": 4, "reference": 4, "bitstreams": 4}
BOARD_SIDE = ("contract", "host", "energy", "e2t")
WORKSTATION = {"torch", "onnx", "onnxruntime", "onnxscript", "hls4ml", "reference", "hls"}


def modules(root: str) -> dict[str, str]:
    """{dotted name: path} of every module of the layered packages under ``root``."""
    found = {}
    for top in LAYERS:
        if not os.path.isfile(os.path.join(root, top, "__init__.py")):
            continue
        for dirpath, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(dirpath, d, "__init__.py")))
            package = os.path.relpath(dirpath, root).replace(os.sep, ".")
            for f in sorted(files):
                if f.endswith(".py"):
                    found[package if f == "__init__.py" else f"{package}.{f[:-3]}"] = os.path.join(dirpath, f)
    return found


def imports(name: str, path: str, known) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, top-level or lazy; a name imported
    from a package is the submodule where there is one, else the package."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in known else base, node.lineno))
    return sorted(set(out), key=lambda e: (e[1], e[0]))


def graph(root: str) -> tuple[dict[str, str], dict[str, list[tuple[str, int]]]]:
    mods = modules(root)
    return mods, {m: imports(m, p, mods) for m, p in mods.items()}


def _where(root: str, mods: dict, m: str, line: int) -> str:
    return f"{os.path.relpath(mods[m], root)}:{line}"


def cycles(root: str, unit=lambda m: m) -> list[str]:
    """Each group of modules that reach each other (Tarjan), with the imports that close it;
    ``unit`` maps a module to what is compared (the module itself, or its package: its room)."""
    mods, edges = graph(root)
    inner = {}
    for m, e in edges.items():
        inner.setdefault(unit(m), set()).update(unit(t) for t, _ in e if t in mods and unit(t) != unit(m))
    inner = {u: sorted(ts) for u, ts in inner.items()}
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # iterative Tarjan: deep import chains stay off Python's recursion limit
        work = [(v, iter(inner[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(inner[w])))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        group.append(w)
                        if w == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for m in sorted(inner):
        if m not in index:
            visit(m)
    found = []
    for group in sorted(groups):
        links = [f"{_where(root, mods, m, line)} {m} -> {t}" for m in mods if unit(m) in group
                 for t, line in edges[m] if t in mods and unit(t) in group and unit(t) != unit(m)]
        found.append(f"cycle {' <-> '.join(group)}: " + "; ".join(sorted(set(links))))
    return found


def upward(root: str) -> list[str]:
    """Imports from a lower layer to a higher one, and across layer 2 (host <-> energy)."""
    mods, edges = graph(root)
    found = []
    for m, e in edges.items():
        src = m.split(".")[0]
        for t, line in e:
            dst = t.split(".")[0]
            if dst not in LAYERS or dst == src:
                continue
            if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] == 2):
                found.append(f"{_where(root, mods, m, line)} {m} (layer {LAYERS[src]}) imports {t} "
                             f"(layer {LAYERS[dst]})")
    return sorted(found)


def workstation(root: str) -> list[str]:
    """Board-side modules that name torch, onnx, hls4ml, reference/ or hls/ in an import."""
    mods, edges = graph(root)
    return sorted(f"{_where(root, mods, m, line)} {m} imports {t}" for m, e in edges.items()
                  if m.split(".")[0] in BOARD_SIDE for t, line in e if t.split(".")[0] in WORKSTATION)


def room(module: str) -> str:
    """The package a module lives in (host.plan.schema -> host.plan), where the modules are files."""
    return module if os.path.isfile(os.path.join(ROOT, *module.split("."), "__init__.py")) else module.rpartition(".")[0]


def test_no_import_cycle():
    assert cycles(ROOT) == []


def test_imports_point_down_the_layers():
    assert upward(ROOT) == []


def test_the_board_side_never_imports_the_workstation_side():
    assert workstation(ROOT) == []


def test_the_checks_find_a_cycle_an_upward_import_and_torch(tmp_path):
    """A small tree with one of each fault, lazy ones included: each is found, named by file:line."""
    files = {
        "contract/__init__.py": "",
        "contract/errors.py": "from host import plan\n",
        "host/__init__.py": "",
        "host/plan.py": "from . import train\n",
        "host/train.py": "def f():\n    from .plan import x\n    import torch\n",
        "energy/__init__.py": "",
        "energy/model.py": "from contract import errors\n\ndef g():\n    from host.train import f\n",
        "e2t/__init__.py": "",
        "e2t/cli.py": "from energy import model\nfrom host import plan\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    root = str(tmp_path)
    assert cycles(root) == [
        "cycle host.plan <-> host.train: host/plan.py:1 host.plan -> host.train; "
        "host/train.py:2 host.train -> host.plan"]
    assert upward(root) == [
        "contract/errors.py:1 contract.errors (layer 1) imports host.plan (layer 2)",
        "energy/model.py:4 energy.model (layer 2) imports host.train (layer 2)"]
    assert workstation(root) == ["host/train.py:3 host.train imports torch"]


if __name__ == "__main__":
    ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    results = {"cycles": cycles(ROOT),
               "cycles between rooms (packages; reported, not tested)": cycles(ROOT, room), "upward imports": upward(ROOT), "workstation imports": workstation(ROOT)}
    for what, found in results.items():
        print(f"{what}: {len(found)}")
        for line in found:
            print(f"  {line}")
    sys.exit(1 if any(v for k, v in results.items() if "rooms" not in k) else 0)
