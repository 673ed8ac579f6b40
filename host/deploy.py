"""``e2t deploy``: one folder, and a tarball of it, with everything a board needs to train.

    BUNDLE/
      wheels/e2t-<version>-py3-none-any.whl   installs with the board requirements only
      requirements-board.txt
      overlay/e2t.bit, e2t.hwh                 when built (make bitstream); else emulated training
      plan/plan.json, plan/weights.bin         the network and its weights (e2t plan / e2t export)
      data/<the data set's file or folder>     what --data-dir reads
      install.sh                               pip install of the wheel and the board requirements
      train.sh                                 e2t train with the bundle's plan, data and E2-Train
      README.txt                               the same, in words

Built on the workstation from the source tree (the wheel needs it); the bundle itself needs
only Python 3.10+, pip, and a C++ compiler for ``--backend emu``.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile

from . import boards, planbuild, plan as planmod
from .config import PRESETS, as_flags, preset
from .datasets import shape_of, source_path
from .errors import E2TError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_wheel(dest: str) -> str:
    """The e2t wheel of this source tree, built into ``dest``; its path."""
    if not os.path.isfile(os.path.join(ROOT, "pyproject.toml")):
        raise E2TError(f"e2t deploy builds the wheel from the source tree, and {ROOT} is not one "
                       f"(run it from a clone: pip install -e .)")
    os.makedirs(dest, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", dest, ROOT], capture_output=True, text=True)
    wheels = [f for f in os.listdir(dest) if f.startswith("e2t-") and f.endswith(".whl")]
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise E2TError(f"building the e2t wheel failed: {last}")
    return os.path.join(dest, wheels[0])


def _copy_data(dataset: str, data_dir: str | None, dest: str) -> str:
    src = source_path(dataset, data_dir)
    os.makedirs(dest, exist_ok=True)
    target = os.path.join(dest, os.path.basename(src.rstrip(os.sep)))
    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, target)
    # --data-dir names the folder holding a built-in set's file; a folder data set is the folder itself
    return os.path.relpath(target if dataset == "folder" else dest, os.path.dirname(dest))


def _script(lines: list[str]) -> str:
    return "#!/bin/sh\n" + "\n".join(lines) + "\n"


def _train_command(plan: planmod.Plan, dataset: str, data_arg: str, epochs: int, batch: int) -> str:
    args = ["train", "--board", plan.board.name, "--init", "plan", "--model", plan.network["model"],
            "--dataset", dataset, "--data-dir", data_arg, "--epochs", str(epochs), "--batch-size", str(batch),
            *as_flags(preset("e2train", slu=bool(plan.network["gates"])))]
    return " ".join(shlex.quote(a) for a in args)


def deploy(board: str, out: str, plan_dir: str | None = None, model: str = "resnet20", dataset: str = "mnist5k",
           data_dir: str | None = None, batch: int = 128, epochs: int = 15, slu: bool = True,
           log=print) -> tuple[str, str]:
    """Write the bundle folder ``out`` and ``out.tar.gz``; returns both paths."""
    b = boards.board(board)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise E2TError(f"--out {out} exists and is not an empty folder: choose a new one")
    if plan_dir is not None:
        plan = planmod.load(plan_dir)
        if plan.board.name != b.name:
            raise E2TError(f"--plan {plan_dir} is for {plan.board.name}, not --board {b.name}")
        batch = min(batch, plan.batch)
    else:
        c, k, size = shape_of(dataset)
        plan, weights, _ = planbuild.from_model(model, c, k, size, b.name, batch, 0, slu,
                                                PRESETS["e2train"]["slu_gate_init"] if slu else None,
                                                dataset)
    source_path(dataset, data_dir)  # a missing data set stops here, before anything is written
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    try:
        return _write(b, out, plan_dir, plan, None if plan_dir else weights, dataset, data_dir, batch, epochs, log)
    except BaseException:
        if created:  # a bundle is written whole or not at all
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write(b, out, plan_dir, plan, weights, dataset, data_dir, batch, epochs, log) -> tuple[str, str]:
    log(f"e2t deploy: building the e2t wheel from {ROOT} ...")
    wheel = build_wheel(os.path.join(out, "wheels"))
    shutil.copy2(os.path.join(ROOT, "requirements-board.txt"), out)
    if weights is None:
        os.makedirs(os.path.join(out, "plan"))
        for name in (planmod.PLAN_FILE, "weights.bin"):
            shutil.copy2(os.path.join(plan_dir, name), os.path.join(out, "plan"))
    else:
        planbuild.save(os.path.join(out, "plan"), plan, weights)
    data_arg = _copy_data(dataset, data_dir, os.path.join(out, "data"))
    bit = os.path.join(boards.DATA, b.name, "e2t.bit")
    overlay = os.path.isfile(bit) and os.path.isfile(bit[:-4] + ".hwh")
    if overlay:
        os.makedirs(os.path.join(out, "overlay"))
        for ext in (".bit", ".hwh"):
            shutil.copy2(bit[:-4] + ext, os.path.join(out, "overlay"))
    backend = "--backend pynq --bitfile overlay/e2t.bit" if overlay else "--backend emu"
    run = f"runs/{plan.network['model']}-{dataset}"
    files = {
        "install.sh": _script([
            "# Installs e2t and the board requirements (the PYNQ image has pynq and numpy 1.x already).",
            "set -e", 'cd "$(dirname "$0")"',
            '"${PYTHON:-python3}" -m pip install -r requirements-board.txt wheels/' + os.path.basename(wheel)]),
        "train.sh": _script([
            f"# Trains {plan.network['model']} on {dataset} with E2-Train ({backend}); arguments are added to e2t train",
            "# (a later --backend, --epochs or --out wins). Ends with the run folder and its energy report.",
            "set -e", 'cd "$(dirname "$0")"',
            "# the same Python install.sh installed into (its e2t script may not be on PATH)",
            f'exec "${{PYTHON:-python3}}" -m host.cli {_train_command(plan, dataset, data_arg, epochs, batch)} '
            f'{backend} --out "${{OUT:-{run}}}" "$@"']),
        "README.txt": "\n".join([
            f"e2t bundle for {b.name} ({b.part}); board image: {b.pynq_image}.",
            "",
            f"1. Copy this folder to the board (scp -r {os.path.basename(out)} xilinx@<board>:).",
            "2. On the board: sh install.sh       (pip install of the e2t wheel and requirements-board.txt;",
            "                                     PYTHON=/path/to/python picks the interpreter, for train.sh too)",
            "3. On the board: sh train.sh         (add e2t train options after it, e.g. --epochs 1)",
            "",
            f"Plan: {plan.network['model']}, {len(plan.convs())} engine convs, batch {plan.batch}; data: {dataset} in {data_arg}/.",
            "Overlay: " + ("overlay/e2t.bit + e2t.hwh: training runs on the fabric (--backend pynq)." if overlay else
                           f"none built (make bitstream BOARD={b.name} PLAN=...): training runs on the emulated "
                           "engine (--backend emu, the engine's CPU build; needs g++)."),
            f"train.sh ends with {run}/ and its energy report (energy/report.html).", ""]),
    }
    for name, text in files.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        if name.endswith(".sh"):
            os.chmod(os.path.join(out, name), 0o755)
    tarball = out.rstrip(os.sep) + ".tar.gz"
    with tarfile.open(tarball + ".tmp", "w:gz") as tar:
        tar.add(out, arcname=os.path.basename(out.rstrip(os.sep)))
    os.replace(tarball + ".tmp", tarball)
    log(f"e2t deploy: wrote {out}/ ({'overlay, ' if overlay else 'no overlay: emulated engine, '}plan, data, "
        f"wheel) and {tarball}")
    return out, tarball
