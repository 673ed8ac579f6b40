"""``e2t deploy``: one folder, and a tarball of it, with everything a board needs to train.

    BUNDLE/
      wheels/e2t-<version>-py3-none-any.whl   installs with the board requirements only
      requirements-board.txt                   those the board needs; never pynq (the image's own)
      overlay/e2t.bit, e2t.hwh                 when built (make bitstream); else emulated training
      plan/plan.json, plan/weights.bin         the network and its weights (e2t plan / e2t export)
      data/<the data set's file or folder>     what --data-dir reads
      python.sh                                sourced by both scripts: which Python, pynq and root
      install.sh                               pip install of the wheel and the board requirements
      train.sh                                 e2t train with the bundle's plan, data and E2-Train
      README.txt                               the same, in words

On a PYNQ v3 image (v3.0.x, v3.1) pynq lives in the virtual environment /usr/local/share/pynq-venv
(Python 3.10, root's) and overlays load only as root: the scripts use that environment's Python,
check that its pynq is the image's and never install one over it, and ask for sudo where root is
needed. ``PYTHON=python3`` picks another interpreter (a Linux without PYNQ: emulated training).
Built on the workstation from a copy of the source tree (the wheel needs it; the tree is left as
it was); the bundle itself needs only Python 3.10+, pip, and a C++ compiler for ``--backend emu``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile

from contract import boards
from contract.errors import E2TError
from host.data.datasets import shape_of, source_path
from host.plan import planbuild, schema as planmod
from host.train.config import PRESETS, as_flags, preset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The PYNQ v3 images (PYNQ's sdbuild, python_packages_jammy): pynq and Jupyter in this virtual
# environment, made from the system Python 3.10 with its site packages (numpy 1.x, matplotlib and
# pillow from Ubuntu 22.04), owned by root. Their pynq: 3.0.0 and 3.0.1 (v3.0.x images; Kria-PYNQ
# v3.0 pip-installs 3.0.1 into the same path), 3.1 (v3.1 images) and its 3.1.x updates.
PYNQ_VENV = "/usr/local/share/pynq-venv"
PYNQ_SERIES = ("3.0", "3.1")


def _copy_source(dest: str) -> None:
    """What the wheel is built from: the tree's top-level files and its Python packages (pyproject's
    ``packages.find`` picks among them), without caches, builds or run folders."""
    os.makedirs(dest)
    for name in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            shutil.copy2(path, dest)
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            shutil.copytree(path, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_wheel(dest: str) -> str:
    """The e2t wheel of this source tree, built into ``dest`` from a copy of the tree in a temporary
    folder (setuptools writes build/ and *.egg-info where it builds); its path."""
    if not os.path.isfile(os.path.join(ROOT, "pyproject.toml")):
        raise E2TError(f"e2t deploy builds the wheel from the source tree, and {ROOT} is not one "
                       f"(run it from a clone: pip install -e .)")
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="e2t-wheel-") as tmp:
        src = os.path.join(tmp, "e2t")
        _copy_source(src)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                               "-w", dest, src], capture_output=True, text=True, cwd=tmp)
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


def _board_requirements(b: boards.Board) -> str:
    """The bundle's requirements-board.txt: the tree's without pynq (the image's own, which
    python.sh checks and pip must never replace) and, on a board without rails pynq reads, without
    pandas (only pynq.DataRecorder needs it; PyPI has no armv7 wheel, so pip would build it there)."""
    drop = {"pynq": "the image's own: python.sh checks its version, pip never replaces it"}
    if not b.rails:
        drop["pandas"] = f"only pynq.DataRecorder needs it, for rails, and {b.name} has none"
    with open(os.path.join(ROOT, "requirements-board.txt")) as f:
        lines = f.read().splitlines()
    kept = [ln for ln in lines if re.split(r"[\s<>=!~;\[]", ln.strip(), maxsplit=1)[0].lower() not in drop]
    return "\n".join(kept + [f"# not here: {name} ({why})" for name, why in drop.items()] + [""])


def _python_sh(overlay: bool) -> str:
    """python.sh, sourced by install.sh and train.sh: the interpreter ``$PY`` (the image's, or
    ``$PYTHON``), ``need_root`` and ``check_pynq`` (where the fabric or the image needs the image's
    pynq). Each refusal is one line on stderr and exit status 2."""
    series = " or ".join(f"{s}.x" for s in PYNQ_SERIES)
    profile = " ".join(f'"${{PYNQ_ROOT:-}}/etc/profile.d/{f}"' for f in ("xrt_setup.sh", "pynq_venv.sh"))
    return _script([
        "# Sourced by install.sh and train.sh: the Python that e2t installs into and trains with.",
        f"# A PYNQ v3 image keeps pynq in the virtual environment {PYNQ_VENV} (root's)",
        "# and loads overlays only as root. PYTHON=python3 picks another interpreter (a Linux without",
        "# PYNQ: the emulated engine needs no pynq); PYNQ_ROOT=DIR looks for the image's files under DIR.",
        'me=$(basename "$0")',
        'fail() { echo "$me: $*" >&2; exit 2; }',
        'need_root() { [ "$(id -u)" = 0 ] || fail "$1: run sudo sh $me"; }',
        f"OVERLAY={'1' if overlay else ''}",
        'if [ -n "${PYTHON:-}" ]; then',
        '    PY=$(command -v "$PYTHON") || fail "PYTHON=$PYTHON is not a Python on this machine"',
        "    IMAGE=",
        "else",
        f"    IMAGE=${{PYNQ_ROOT:-}}{PYNQ_VENV}",
        "    PY=$IMAGE/bin/python3",
        f'    [ -x "$PY" ] || fail "no $PY: not a PYNQ v3 image (it keeps pynq in {PYNQ_VENV}); '
        'on another Linux: PYTHON=python3 sh $me"',
        "    # pynq reaches the fabric only with XILINX_XRT set: login shells and Jupyter get it from the",
        "    # image's /etc/profile.d (xrt_setup.sh; Kria-PYNQ: pynq_venv.sh), and sudo drops it",
        '    if [ -z "${XILINX_XRT:-}" ]; then',
        f"        XILINX_XRT=$(cat {profile} 2>/dev/null | sed -n 's/^export XILINX_XRT=//p' | tail -n 1)",
        '        [ -z "$XILINX_XRT" ] || export XILINX_XRT',
        "    fi",
        "fi",
        "check_pynq() {  # the pynq that drives the fabric is the image's own",
        '    [ -n "$IMAGE" ] || [ -n "$OVERLAY" ] || return 0',
        "    PYNQ=$(\"$PY\" -c 'import pynq; print(\"pynq=\" + pynq.__version__)' 2>/dev/null | sed -n 's/^pynq=//p')",
        f"    case $PYNQ in {'|'.join(f'{s}|{s}.*' for s in PYNQ_SERIES)}) ;;",
        f'        "") fail "$PY has no pynq: this bundle needs the environment of a PYNQ v3 image (pynq {series})" ;;',
        f'        *) fail "$PY has pynq $PYNQ; this bundle is for the PYNQ v3 images\' pynq {series} and never '
        'installs one over the image\'s: use a v3.0.1 or v3.1 image" ;;',
        "    esac",
        "}"])


def _train_command(plan: planmod.Plan, dataset: str, data_arg: str, epochs: int, batch: int,
                   folder: tuple = ()) -> str:
    args = ["train", "--board", plan.board.name, "--init", "plan", "--model", plan.network["model"],
            "--dataset", dataset, "--data-dir", data_arg, *folder, "--epochs", str(epochs), "--batch-size", str(batch),
            *as_flags(preset("e2train", slu=bool(plan.network["gates"])))]
    return " ".join(shlex.quote(a) for a in args)


def deploy(board: str, out: str, plan_dir: str | None = None, model: str = "resnet20", dataset: str = "mnist5k",
           data_dir: str | None = None, batch: int = 128, epochs: int = 15, slu: bool = True,
           log=print, image_size: int | None = None, image_channels: int | None = None) -> tuple[str, str]:
    """Write the bundle folder ``out`` and ``out.tar.gz``; returns both paths. A folder data set
    (``image_size``, ``image_channels`` as e2t train's --size, --channels) is read and checked here,
    copied as it is, and train.sh converts it with the size and channels it has here."""
    for flag, value in (("--epochs", epochs), ("--batch", batch)):
        if value < 1:  # here, not on the board when train.sh starts
            raise E2TError(f"{flag} must be at least 1, got {value}: train.sh trains with it on the board")
    if not out.strip(os.sep + " "):
        raise E2TError(f"--out {out!r} names no folder: give the bundle folder to write, e.g. --out bundle")
    b = boards.board(board)
    boards.check_fit(b, batch, "--batch", image_size)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise E2TError(f"--out {out} exists and is not an empty folder: choose a new one")
    if os.path.exists(out.rstrip(os.sep) + ".tar.gz"):
        raise E2TError(f"{out.rstrip(os.sep)}.tar.gz exists (the bundle's tarball is written beside --out): "
                       f"choose another --out or move it away")
    if plan_dir is not None:
        plan = planmod.load(plan_dir)
        if plan.board.name != b.name:
            raise E2TError(f"--plan {plan_dir} is for {plan.board.name}, not --board {b.name}")
        batch = min(batch, plan.batch)
    c, k, size = shape_of(dataset, data_dir, image_size, image_channels)  # reads a folder data set
    if plan_dir is None:
        plan, weights, _ = planbuild.from_model(model, c, k, size, b.name, batch, 0, slu,
                                                PRESETS["e2train"]["slu_gate_init"] if slu else None,
                                                dataset)
    elif (plan.network["in_channels"], plan.network["height"]) != (c, size):
        raise E2TError(f"--plan {plan_dir} takes {plan.network['in_channels']} x {plan.network['height']} x "
                       f"{plan.network['width']} images into {plan.network['num_classes']} classes; {dataset} has "
                       f"{c} x {size} x {size} images in {k} classes")
    elif plan.network["num_classes"] != k:  # the trainer on the board puts a new head on it (host/plan/finetune.py)
        log(f"e2t deploy: --plan {plan_dir} has {plan.network['num_classes']} classes, {dataset} {k}: train.sh "
            f"fine-tunes it with a new head (the convs keep their trained weights)")
    folder = ("--size", str(size), "--channels", str(c)) if dataset == "folder" else ()
    source_path(dataset, data_dir)  # a missing data set stops here, before anything is written
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise E2TError(f"--out {out}: cannot make the bundle folder ({e.strerror})") from None
    try:
        return _write(b, out, plan_dir, plan, None if plan_dir else weights, dataset, data_dir, batch, epochs, log,
                      folder)
    except BaseException as e:
        if created:  # a bundle is written whole or not at all
            shutil.rmtree(out, ignore_errors=True)
        if os.path.exists(out.rstrip(os.sep) + ".tar.gz.tmp"):
            os.unlink(out.rstrip(os.sep) + ".tar.gz.tmp")
        if isinstance(e, OSError):
            raise E2TError(f"writing the bundle {out} failed ({e})" + ("; none of it is kept" if created else "")) \
                from None
        raise


def _write(b, out, plan_dir, plan, weights, dataset, data_dir, batch, epochs, log, folder=()) -> tuple[str, str]:
    log(f"e2t deploy: building the e2t wheel from {ROOT} ...")
    wheel = build_wheel(os.path.join(out, "wheels"))
    with open(os.path.join(out, "requirements-board.txt"), "w") as f:
        f.write(_board_requirements(b))
    if weights is None:
        os.makedirs(os.path.join(out, "plan"))
        for name in (planmod.PLAN_FILE, "weights.bin"):
            shutil.copy2(os.path.join(plan_dir, name), os.path.join(out, "plan"))
    else:
        planbuild.save(os.path.join(out, "plan"), plan, weights)
    data_arg = _copy_data(dataset, data_dir, os.path.join(out, "data"))
    if folder:
        copied = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(out, data_arg)) for f in fs] or \
            [os.path.join(out, data_arg)]
        log(f"e2t deploy: copied the folder data set {source_path(dataset, data_dir)} into the bundle's {data_arg} "
            f"({len(copied)} files, {sum(map(os.path.getsize, copied)) / 2**20:.3g} MiB); train.sh reads it there "
            f"with {' '.join(folder)}")
    bit = os.path.join(boards.DATA, b.name, "e2t.bit")
    overlay = os.path.isfile(bit) and os.path.isfile(bit[:-4] + ".hwh")
    if overlay:
        os.makedirs(os.path.join(out, "overlay"))
        for ext in (".bit", ".hwh"):
            shutil.copy2(bit[:-4] + ext, os.path.join(out, "overlay"))
    backend = "--backend pynq --bitfile overlay/e2t.bit" if overlay else "--backend emu"
    run = f"runs/{plan.network['model']}-{dataset}"
    sudo = "sudo " if overlay else ""  # the overlay loads only as root
    train = sudo + "${PYTHON:+PYTHON=$PYTHON }sh train.sh"  # expanded by the scripts
    files = {
        "python.sh": _python_sh(overlay),
        "install.sh": _script([
            "# Installs e2t and the board requirements into the Python of python.sh (on a PYNQ image its",
            "# pynq-venv, as root: sudo sh install.sh). pynq is the image's and is never installed here.",
            "set -e", 'cd "$(dirname "$0")"', ". ./python.sh",
            '[ -z "$IMAGE" ] || need_root "the PYNQ environment $IMAGE is root\'s"', "check_pynq",
            '"$PY" -m pip install -r requirements-board.txt',
            "# a bundle of the same e2t version replaces the e2t installed before",
            f'"$PY" -m pip install --force-reinstall --no-deps wheels/{os.path.basename(wheel)}',
            f'echo "install.sh: e2t is installed for $PY${{PYNQ:+ (pynq $PYNQ)}}; next: {train}"']),
        "train.sh": _script([
            f"# Trains {plan.network['model']} on {dataset} with E2-Train ({backend}); arguments are added to e2t train",
            "# (a later --backend or --epochs wins). Each run gets a new folder, runs/<model>-<dataset>-1, -2, ...",
            "# (OUT=DIR or --out DIR names one; --resume --out DIR continues it) and ends with its energy report.",
            "set -e", 'cd "$(dirname "$0")"', ". ./python.sh",
            *(['need_root "loading the overlay needs root"'] if overlay else []), "check_pynq",
            "\"$PY\" -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"host\") is None)' || "
            'fail "e2t is not installed for $PY: run ${IMAGE:+sudo }${PYTHON:+PYTHON=$PYTHON }sh install.sh first"',
            "given=",
            'for a in "$@"; do case $a in --out|--out=*) given=1 ;; esac; done',
            'if [ -z "$given" ]; then',
            '    if [ -z "${OUT:-}" ]; then',
            f'        n=1; while [ -e "{run}-$n" ]; do n=$((n + 1)); done; OUT={run}-$n',
            '        echo "train.sh: new run folder $OUT (earlier runs are kept; an interrupted one continues with: '
            f'{train} --resume --out DIR)" >&2',
            "    fi",
            '    set -- --out "$OUT" "$@"',
            "fi",
            f'exec "$PY" -m e2t.cli {_train_command(plan, dataset, data_arg, epochs, batch, folder)} {backend} "$@"']),
        "README.txt": "\n".join([
            f"e2t bundle for {b.name} ({b.part}); board image: {b.pynq_image}.",
            "",
            f"1. Copy this folder to the board (scp -r {os.path.basename(out)} xilinx@<board>:).",
            "2. On the board: sudo sh install.sh  (pip install of the e2t wheel and requirements-board.txt into",
            f"                                     the image's {PYNQ_VENV}; it checks that its pynq is the",
            f"                                     image's, {' or '.join(s + '.x' for s in PYNQ_SERIES)}, "
            "and never installs pynq)",
            f"3. On the board: {sudo + 'sh train.sh':<20}(add e2t train options after it, e.g. --epochs 1)",
            "On a Linux without PYNQ: PYTHON=python3 sh install.sh, then PYTHON=python3 sh train.sh.",
            "",
            f"Plan: {plan.network['model']}, {len(plan.convs())} engine convs, batch {plan.batch}; data: {dataset} in {data_arg}/"
            + (f" (its files as they are; train.sh converts them with {' '.join(folder)})." if folder else "."),
            "Overlay: " + ("overlay/e2t.bit + e2t.hwh: training runs on the fabric (--backend pynq)." if overlay else
                           f"none built (make bitstream BOARD={b.name} PLAN=...): training runs on the emulated "
                           "engine (--backend emu, the engine's CPU build; needs g++)."),
            f"Each sh train.sh writes a new run folder, {run}-1/, {run}-2/, ..., and ends with its energy report "
            "(energy/report.html).", ""]),
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
