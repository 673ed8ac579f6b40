"""A seeded fuzz test of the real entry points (issue 21): mutated plans, weights, checkpoints,
configs, run records, energy models, data folders, ONNX graphs and flags through e2t.cli.main.
Every case ends in a one-line refusal (exit 2, nothing changed on disk) or, where the mutation
kept the meaning, in numbers equal to the unmutated input's; tests/fuzzing.py has the classes
and the verdict. A case's mutation comes from random.Random(f"{SEED}:{case}"), so
``pytest tests/test_fuzz.py -k plan-007`` reruns it alone; E2T_FUZZ_LOG=FILE appends every case's
outcome to FILE as a JSON line. A handful of cases train (8 x 8 images, two batches); the rest stop
at validation."""
import contextlib
import copy
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from contract.boards import DATA
from energy import report as energy_report
from host.plan import planbuild, schema as planmod, weightsfile
from host.train.config import TrainConfig

from fuzzing import (ANY, DEEP, INERT, INVALID, JSON_OPS, PIPE, SAME, changes, closed_pipe, digest, flipped,
                     mutate_json, png_declaring, run_cli, truncated, verdict)
from test_export import _tiny_onnx

SEED = 21
TIMING = ("seconds", "images_per_s", "engine_seconds", "rails")  # what differs between equal runs


def _no_plots(result):
    """The energy report's PNG plots are 3/4 of a tiny run's time and hold no numbers: runs that
    train skip them (tests/test_energy.py renders them); the energy report cases draw them."""
    return {}


@dataclass
class Case:
    argv: list
    cls: str
    desc: str
    same: object = None  # outcome -> how its numbers differ from the unmutated input's (None: equal)
    kept: tuple = ()  # paths (under the case's folder) it only reads: unchanged whatever the exit
    plots: bool = False  # draw the energy report's PNG plots (see _no_plots)
    unnamed: tuple = ()  # files the command line never names: a refusal must not name them either
    stdout: object = None
    memory: int = 3 << 30


def _train(w, out, data=None, init=None, epochs=1):
    return ["train", "--backend", "emu", "--precision", "fixed", "--psg", "--model", "resnet8", "--dataset", "folder",
            "--data-dir", data or w.data, "--init", init or w.plan, "--batch-size", "8", "--slu-target", "0.7",
            "--lr", "0.05", "--lr-gamma", "1", "--epochs", str(epochs), "--quiet", "--out", out]


def _resume(w, run="run"):
    return ["train", "--resume", "--out", run, "--data-dir", w.data, "--quiet"]


def _ok(o, rc=0):
    assert o.error is None and o.rc == rc, (o.rc, o.error, o.err[-2000:])
    return o


def _copy(src, here, name):
    dst = os.path.join(here, name)
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)
    return dst


def _write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# -- the numbers an exit-0 run is compared by --------------------------------------------------------

def _run_numbers(folder):
    """A run's metrics records (less timings) and its checkpoint's arrays (less the metadata)."""
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        records = [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f if line.strip()]
    with np.load(os.path.join(folder, "checkpoint.npz")) as z:
        return records, {k: z[k] for k in z.files if k != "meta"}


def _same_run(folder, want, last_only=False):
    def differ(o):
        try:
            records, arrays = _run_numbers(folder)
        except (OSError, ValueError) as e:
            return f"cannot read the run's results ({e})"
        want_records = want[0][-1:] if last_only else want[0]
        records = records[-1:] if last_only else records
        if len(records) != len(want_records):
            return f"{len(records)} metrics records, not {len(want_records)}"
        for got, exp in zip(records, want_records):
            keys = sorted(k for k in set(got) | set(exp) if got.get(k) != exp.get(k))
            if keys:
                return f"the epoch {exp['epoch']} record differs in {keys[:5]}"
        bad = sorted(set(arrays) ^ set(want[1])) or [k for k, a in want[1].items() if
                                                     arrays[k].dtype != a.dtype or not np.array_equal(arrays[k], a)]
        return f"checkpoint arrays differ: {bad[:5]}" if bad else None
    return differ


def _same_out(want, paths=()):
    def differ(o):
        got = o.out
        for p in paths:
            got = got.replace(p, "MODEL")
        diff = [(a, b) for a, b in zip(got.splitlines(), want.splitlines()) if a != b]
        return f"stdout differs: {diff[0]}" if diff or len(got.splitlines()) != len(want.splitlines()) else None
    return differ


def _files(folder, names=("plan.json", "weights.bin")):
    return {n: _read(os.path.join(folder, n)) for n in names}


def _same_files(folder, want):
    def differ(o):
        try:
            got = _files(folder)
        except OSError as e:
            return str(e)
        return f"{[n for n in want if got[n] != want[n]]} differ" if got != want else None
    return differ


def _export_numbers(folder):
    with open(os.path.join(folder, "plan.json")) as f:
        plan = json.load(f)
    plan.pop("provenance")
    return plan, _read(os.path.join(folder, "weights.bin"))


def _same_export(folder, want):
    def differ(o):
        try:
            plan, weights = _export_numbers(folder)
        except (OSError, ValueError, KeyError) as e:
            return f"cannot read the export ({e})"
        keys = sorted(k for k in set(plan) | set(want[0]) if plan.get(k) != want[0].get(k))
        return f"plan.json differs in {keys}" if keys else "weights.bin differs" if weights != want[1] else None
    return differ


def _same_report(folder, want):
    def differ(o):
        try:
            with open(os.path.join(folder, "energy", "energy.json")) as f:
                got = json.load(f)
        except (OSError, ValueError) as e:
            return f"cannot read the report ({e})"
        return f"energy.json differs in {sorted(k for k in want if got.get(k) != want[k])}" if got != want else None
    return differ


# -- the unmutated inputs and their numbers (built once) --------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    shared = root / "shared"
    w = SimpleNamespace(root=str(root), shared=str(shared), data=str(shared / "data"), plan=str(shared / "plan"),
                        model=str(shared / "energy.json"), stopped=str(root / "stopped"), resumed=str(root / "resumed"))
    rng = np.random.default_rng(SEED)
    w.pixels, w.labels = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8), np.repeat([0, 1], 12)
    for i, (a, y) in enumerate(zip(w.pixels, w.labels)):
        (shared / "data" / "ab"[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "L").save(shared / "data" / "ab"[y] / f"{i % 12:02d}.png")
    planbuild.save(w.plan, *planbuild.from_model("resnet8", 1, 2, 8, "pynq-z2", 8, seed=0, slu=True)[:2])
    w.onnx = _tiny_onnx(shared / "tiny.onnx")
    shutil.copy(os.path.join(DATA, "pynq-z2", "energy.json"), w.model)
    # a run stopped in its second epoch (a checkpoint after the first), and the same run resumed
    from host.train.trainer import EngineTrainer
    real, calls = EngineTrainer.train_epoch, []

    def stop_in_epoch_2(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EngineTrainer, "train_epoch", stop_in_epoch_2)
        _ok(run_cli(_train(w, w.stopped, epochs=2), w.root), rc=2)
        shutil.copytree(w.stopped, w.resumed)
        mp.setattr(energy_report, "_plots", _no_plots)
        _ok(run_cli(_resume(w, w.resumed), w.root))
    w.fresh, w.resume = _run_numbers(w.stopped), _run_numbers(w.resumed)  # a 1-epoch run equals the first epoch
    with open(os.path.join(w.resumed, "energy", "energy.json")) as f:
        w.report = json.load(f)
    w.estimate = _ok(run_cli(["estimate", "--plan", w.plan], w.root)).out
    w.estimate_model = _ok(run_cli(["estimate", "--plan", w.plan, "--energy-model", w.model], w.root)).out \
        .replace(w.model, "MODEL")
    w.info = _ok(run_cli(["info", "--model", "resnet8"], w.root)).out
    _ok(run_cli(["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "8", "--out", "plan_cli"], w.root))
    w.plan_cli = _files(os.path.join(w.root, "plan_cli"))
    _ok(run_cli(["export", w.onnx, "--out", "onnx_base", "--batch", "8", "--quiet"], w.root))
    w.exported = _export_numbers(os.path.join(w.root, "onnx_base"))
    w.shared_digest = digest(w.shared)
    return w


# -- plan.json, config.json, metrics.jsonl and energy model files: JSON mutations ---------------------

def plan_class(path, op, old, new, doc):
    """The class of a value-changing mutation of plan.json at ``path`` (docs/plan.md's fields)."""
    top = path[0]
    field = next((p for p in reversed(path) if isinstance(p, str)), None)
    if top == "provenance" or op == "unknown" or (top == "formats" and field in ("exponent", "doc")):
        return INERT
    ctx = "buffer" if path[:2] == ("ddr", "buffers") else top
    entry = doc["ops"][path[1]] if top == "ops" and len(path) > 1 else {}
    if op == "swap":  # op names are labels; params and buffers of one dtype and shape trade contents
        a, b = old
        return SAME if ctx == "ops" else ANY if (a["dtype"], a["shape"]) == (b["dtype"], b["shape"]) else INVALID
    if op == "delete":
        if field == "crc32":
            return SAME
        optional = {("ops", "gate"), ("buffer", "init"), ("buffer", "role"), ("buffer", "format"), ("network", "dataset")}
        return ANY if (ctx, field) in optional else INVALID
    if op == "string" and (new != "" or (ctx, field) == ("network", "dataset")):
        if (ctx, field) == ("ops", "name"):
            return SAME
        labels = {("network", "model"), ("network", "dataset"), ("ops", "role"), ("buffer", "role"), ("buffer", "format")}
        return ANY if (ctx, field) in labels else INVALID
    if op == "special" and ((field in ("w_exp", "wq_exp") and new == -1) or (field == "eps" and new in (10 ** 30, 1e308))):
        return ANY  # another exponent, a huge epsilon: valid, and another network
    if op == "retype" and new is None and field in ("gate", "block") and entry.get("type") == "conv":
        return ANY
    return INVALID


def emodel_class(path, op, old, new, doc):
    """The class of a value-changing mutation of an energy model file (energy/model.py's fields)."""
    field = next((p for p in reversed(path) if isinstance(p, str)), None)
    if op == "unknown" or field == "source" or path[0] == "not_modeled":
        return INERT
    if path[0] in ("table", "board") or path == ("host", "cpu") or (op == "special" and new in (10 ** 30, 1e308)) or \
            (op == "delete" and path[0] == "mac_pj" and len(path) == 2):
        return ANY
    return INVALID


PLAN_KINDS = ("version true", "region", "init", "gate block", "no loss", "duplicate name", "bn momentum",
              "shared conv buffer", "reshaped shared buffer")  # the classes issue 21 found, item 1


def _plan_kind(rng, doc, kind):
    """One of the PLAN_KINDS mutations of a copy of ``doc``: (text, description, class)."""
    d = copy.deepcopy(doc)
    ops = d["ops"]
    kinds = lambda t: [o for o in ops if o["type"] == t]  # noqa: E731
    cls = INVALID
    if kind == "version true":
        d["version"] = True
    elif kind == "region":
        e = rng.choice([e for e in d["params"] if e["region"] == "ddr"])
        e["region"], kind = "host", f"params {e['name']} region host"
    elif kind == "init":
        e = rng.choice([b for b in d["ddr"]["buffers"] if b.get("init")])
        e["init"] = rng.choice(["weights.bim", "zeros", ""])
        kind = f"buffer {e['name']} init {e['init']!r}"
    elif kind in ("gate block", "bn momentum"):
        op = rng.choice(kinds("gate" if kind == "gate block" else "batchnorm"))
        key = "block" if kind == "gate block" else "momentum"
        op[key] = rng.choice([-1, 99, "1", None] if kind == "gate block" else [-math.inf, math.inf, math.nan, -0.5, 2.0])
        kind = f"{op['name']}.{key} = {op[key]!r}"
    elif kind == "no loss":
        d["ops"] = [o for o in ops if o["type"] != "loss"]
    elif kind == "duplicate name":
        a, b = rng.sample(ops, 2)
        b["name"], kind = a["name"], f"two ops named {a['name']}"
    elif kind == "shared conv buffer":
        a, b = [o for o in kinds("conv") if (o["c_in"], o["c_out"], o["k"]) == (16, 16, 3)]
        role = rng.choice(("wgt", "wshift", "master", "mom"))
        b["buffers"][role], kind = a["buffers"][role], f"{b['name']} uses {a['buffers'][role]}"
    else:
        e = rng.choice([b for b in d["ddr"]["buffers"] if b["name"].startswith("shared.")])
        n = int(np.prod(e["shape"]))
        e["shape"], cls, kind = [n // 2, 2], SAME, f"{e['name']} reshaped to [{n // 2}, 2]"
    return json.dumps(d, indent=1), kind, cls


def plan_case(w, rng, i, here):
    with open(os.path.join(w.plan, "plan.json")) as f:
        doc = json.load(f)
    if 4 <= i < 4 + len(PLAN_KINDS):
        text, desc, cls = _plan_kind(rng, doc, PLAN_KINDS[i - 4])
    else:
        op = ("reorder", "intfloat", "numstr", "unknown")[i] if i < 4 else rng.choice(JSON_OPS)
        text, desc, cls = mutate_json(rng, doc, op, plan_class)
    p = _copy(w.plan, here, "plan")
    _write(os.path.join(p, "plan.json"), text)
    if i == 0 or 4 <= i < 4 + len(PLAN_KINDS):  # through the trainer (case 0, the meaning kept, trains)
        return Case(_train(w, "out", init=p), cls, "plan.json " + desc, _same_run(os.path.join(here, "out"), w.fresh),
                    kept=("plan",))
    return Case(["estimate", "--plan", p], cls, "plan.json " + desc, _same_out(w.estimate))


def config_case(w, rng, i, here):
    if i >= 14:
        return _report_config_case(w, rng, i, here)
    run = _copy(w.stopped, here, "run")
    path = os.path.join(run, "config.json")
    with open(path) as f:
        doc = json.load(f)
    if i == 1:
        os.remove(path)
        os.mkdir(path)
        desc, cls = "is a folder", INVALID
    elif i == 2:
        _write(path, "[]")
        desc, cls = "is a list", INVALID
    else:
        op = "reorder" if i == 0 else rng.choice([o for o in JSON_OPS if o != "swap"])
        default = TrainConfig().to_dict()
        where = (lambda p: doc[p[0]] != default[p[0]]) if op == "delete" else None  # a default comes back equal
        text, desc, cls = mutate_json(rng, doc, op, lambda p, o, *a: INERT if o == "unknown" else INVALID, where)
        _write(path, text)
    return Case(_resume(w), cls, "config.json " + desc, _same_run(run, w.resume))


def _report_copy(w, here, name="run"):
    """What e2t energy report reads of the resumed run: its config.json and metrics.jsonl."""
    run = os.path.join(here, name)
    os.mkdir(run)
    for record in ("config.json", "metrics.jsonl"):
        shutil.copy(os.path.join(w.resumed, record), run)
    return run


def _report_config_case(w, rng, i, here):
    run = _report_copy(w, here)
    path = os.path.join(run, "config.json")
    with open(path) as f:
        doc = json.load(f)
    kind = ("list", "deep", "board", "board")[i - 14]
    if kind == "list":
        text, desc = "[]", "is a list"
    elif kind == "deep":
        text, desc = "[" * DEEP + "]" * DEEP, f"is a list {DEEP} deep"
    else:
        text, desc, _ = mutate_json(rng, doc, rng.choice(("string", "retype")), lambda *a: INVALID,
                                    lambda p: p == ("board",))
    _write(path, text)
    return Case(["energy", "report", "run"], INVALID, "config.json (energy report) " + desc, plots=True)


def metrics_case(w, rng, i, here):
    if i < 3:
        run = _copy(w.stopped, here, "run")
        path = os.path.join(run, "metrics.jsonl")
        text = _read(path).decode()
        if i == 0:  # what a kill during the append leaves
            _write(path, text[:rng.randrange(1, len(text) - 1)])
            return Case(_resume(w), SAME, "metrics.jsonl: its last line torn", _same_run(run, w.resume, last_only=True))
        if i == 1:
            os.remove(path)
            os.mkdir(path)
            return Case(_resume(w), INVALID, "metrics.jsonl is a folder")
        _write(path, "{not json\n" + text)
        return Case(_resume(w), ANY, "metrics.jsonl: a line that is not JSON before the record")
    run = _report_copy(w, here)
    path = os.path.join(run, "metrics.jsonl")
    lines = _read(path).decode().splitlines()
    if i == 3:
        os.remove(path)
        os.mkdir(path)
        return Case(["energy", "report", "run"], INVALID, "metrics.jsonl (energy report) is a folder", plots=True)
    if i == 4:
        _write(path, "\n".join(lines[:1] + lines) + "\n")
        return Case(["energy", "report", "run"], INVALID, "metrics.jsonl (energy report): epoch 1's record twice",
                    kept=("run/metrics.jsonl",), plots=True)
    k = rng.randrange(len(lines))
    op = rng.choice(("special", "retype", "bool", "deep", "delete", "numstr"))
    text, desc, cls = mutate_json(rng, json.loads(lines[k]), op,
                                  lambda p, o, old, new, d: ANY if o == "delete" or new in (10 ** 30, 1e308) else INVALID,
                                  lambda p: p[:1] == ("ops",) and len(p) > 1)
    lines[k] = text.replace("\n", "")
    _write(path, "\n".join(lines) + "\n")
    return Case(["energy", "report", "run"], cls, f"metrics.jsonl (energy report) line {k + 1} {desc}",
                _same_report(run, w.report), kept=("run/metrics.jsonl", "run/config.json"), plots=True)


def emodel_case(w, rng, i, here):
    with open(w.model) as f:
        doc = json.load(f)
    op = "reorder" if i == 0 else rng.choice([o for o in JSON_OPS if o != "swap"])
    text, desc, cls = mutate_json(rng, doc, op, emodel_class)
    path = os.path.join(here, "energy.json")
    _write(path, text)
    return Case(["estimate", "--plan", w.plan, "--energy-model", path], cls, "energy model " + desc,
                _same_out(w.estimate_model, [path]))


# -- weights.bin and checkpoint.npz ----------------------------------------------------------------

WEIGHT_KINDS = ("truncate", "append", "flip", "nan", "inf", "negative variance", "empty", "missing", "folder",
                "flip", "nan", "truncate", "inf", "negative variance", "flip")


def _repack(rng, folder, kind):
    """Put a NaN, an infinity or a negative variance into one float array, with every checksum
    made right again by the project's own weightsfile.pack."""
    plan = planmod.load(folder)
    arrays = weightsfile.read(folder, plan)
    name = rng.choice([e["name"] for e in plan.data["params"] if e["dtype"] == "float32" and
                       (kind != "negative variance" or e["name"].endswith("running_var"))])
    flat = arrays[name].reshape(-1)
    k = rng.randrange(flat.size)
    flat[k] = {"nan": np.nan, "inf": rng.choice([np.inf, -np.inf]), "negative variance": -rng.uniform(0.1, 10)}[kind]
    data = copy.deepcopy(plan.data)
    blob = weightsfile.pack(data["params"], arrays)
    data["weights"] = weightsfile.describe(blob)
    _write(os.path.join(folder, "plan.json"), json.dumps(data, indent=1) + "\n")
    _write(os.path.join(folder, "weights.bin"), blob)
    return f"{name}[{k}] = {flat[k]:g}, checksums recomputed"


def weights_case(w, rng, i, here):
    kind = WEIGHT_KINDS[i]
    p = _copy(w.plan, here, "plan")
    path = os.path.join(p, "weights.bin")
    data = _read(path)
    if kind in ("missing", "folder"):
        os.remove(path)
        if kind == "folder":
            os.mkdir(path)
        desc = kind
    elif kind in ("nan", "inf", "negative variance"):
        desc = _repack(rng, p, kind)
    else:
        data, desc = {"truncate": lambda: truncated(rng, data), "flip": lambda: flipped(rng, data),
                      "append": lambda: (data + bytes(rng.randrange(1, 100)), "zero bytes appended"),
                      "empty": lambda: (b"", "empty")}[kind]()
        _write(path, data)
    return Case(_train(w, "out", init=p), INVALID, f"weights.bin {desc}", kept=("plan",))


CKPT_KINDS = ("drop", "drop meta", "narrow", "float for int", "broadcast", "flatten", "grow", "nan", "epoch 99",
              "epoch -1", "epoch 2", "iteration", "config", "exps", "meta garbage", "meta deep", "truncate", "flip",
              "extra", "compressed", "folder", "empty", "epoch ?", "drop")


def _ckpt_arrays(rng, arrays, kind):
    """Mutate a checkpoint's arrays in place; returns (description, class)."""
    meta = json.loads(bytes(arrays["meta"]).decode())
    names = sorted(k for k in arrays if k != "meta")

    def pick(test=lambda a: True):
        return rng.choice([k for k in names if test(arrays[k])])
    if kind == "drop":
        name = pick()
        del arrays[name]
        return f"array {name} dropped", INVALID
    if kind == "drop meta":
        del arrays["meta"]
        return "its metadata dropped", INVALID
    if kind in ("narrow", "float for int"):
        name = pick(lambda a: a.dtype in (np.int16, np.int32, np.float32) if kind == "narrow" else a.dtype == np.int32)
        a = arrays[name]
        to = np.float32 if kind == "float for int" else {np.dtype(np.int16): np.int8, np.dtype(np.int32): np.int16,
                                                         np.dtype(np.float32): np.float16}[a.dtype]
        arrays[name] = a.astype(to)
        kept = np.array_equal(arrays[name].astype(a.dtype), a)
        return f"{name} {a.dtype} -> {np.dtype(to)} (values {'kept' if kept else 'cut'})", SAME if kept else INVALID
    if kind in ("broadcast", "flatten", "grow", "nan"):
        name = pick(lambda a: a.ndim > 1 if kind == "flatten" else a.dtype == np.float32 if kind == "nan" else a.size > 1)
        a = arrays[name]
        if kind == "nan":
            a = a.copy()
            a.reshape(-1)[rng.randrange(a.size)] = np.nan
        arrays[name] = {"broadcast": lambda: a.reshape(-1)[:1], "flatten": lambda: a.reshape(-1), "nan": lambda: a,
                        "grow": lambda: np.concatenate([a, a[:1]])}[kind]()
        return f"{name} {kind}: shape {a.shape} -> {arrays[name].shape}", INVALID
    if kind == "extra":
        arrays["ddr/zz_fuzz"] = np.zeros(4, np.int32)
        return "an array the plan does not have", INVALID
    if kind == "compressed":
        return "saved again, compressed", SAME
    if kind == "meta garbage":
        arrays["meta"] = np.frombuffer(bytes(rng.randrange(256) for _ in range(64)), np.uint8)
        return "metadata not JSON", INVALID
    if kind == "meta deep":
        arrays["meta"] = np.frombuffer(("[" * DEEP + "]" * DEEP).encode(), np.uint8)
        return f"metadata a list {DEEP} deep", INVALID
    if kind.startswith("epoch"):  # 99: past the run's end; 2: its end, never trained; -1, 0, ...: no epoch
        meta["epoch"] = rng.choice([0, 1.5, True, None, "1", 10 ** 30]) if kind == "epoch ?" else int(kind.split()[1])
    elif kind == "iteration":
        meta["iteration"] += rng.choice([1, -1, 1000])
    elif kind == "config":
        meta["config"]["lr"] = 0.06
    else:
        del meta["exps"][rng.choice(sorted(meta["exps"]))]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return f"metadata {kind} changed: {json.dumps({k: meta.get(k) for k in ('epoch', 'iteration')})}", INVALID


def ckpt_case(w, rng, i, here):
    kind = CKPT_KINDS[i]
    run = _copy(w.stopped, here, "run")
    path = os.path.join(run, "checkpoint.npz")
    cls = INVALID
    if kind in ("folder", "empty"):
        os.remove(path)
        if kind == "folder":
            os.mkdir(path)
        else:
            _write(path, b"")
        desc = kind
    elif kind in ("truncate", "flip"):
        data, desc = (truncated if kind == "truncate" else flipped)(rng, _read(path))
        _write(path, data)
        cls = SAME if kind == "flip" else INVALID  # a flip in a zip's date field keeps every array
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        desc, cls = _ckpt_arrays(rng, arrays, kind)
        (np.savez_compressed if kind == "compressed" else np.savez)(path, **arrays)
    return Case(_resume(w), cls, f"checkpoint.npz {desc}", _same_run(run, w.resume))


# -- data folders and .npz data sets ---------------------------------------------------------------

PNG_KINDS = ("truncate", "bomb", "big", "garbage", "empty", "one image", "empty class", "one class", "odd size",
             "rgb", "stray files", "bad crc", "truncate")
NPZ_KINDS = ("same pixels", "x float", "x int64", "y float", "y huge", "y negative", "one class", "truncate", "no y",
             "x 2-d", "length", "y strings", "pickled", "y 2-d", "no images", "flip", "y sparse")


def _png_case(w, rng, kind, here):
    d = _copy(w.data, here, "data")
    victim = os.path.join(d, rng.choice("ab"), f"{rng.randrange(12):02d}.png")
    raw = _read(victim)
    cls, desc = INVALID, f"{os.path.relpath(victim, here)} {kind}"
    if kind in ("truncate", "bad crc"):
        start = raw.find(b"IDAT") + 4
        data, how = truncated(rng, raw, 0.3, 0.9) if kind == "truncate" else flipped(rng, raw, start, len(raw) - 16)
        _write(victim, data)
        cls, desc = (SAME if kind == "truncate" else INVALID), f"{os.path.relpath(victim, here)} {how}"
    elif kind in ("bomb", "big"):
        side = 20000 if kind == "bomb" else 10000
        _write(victim, png_declaring(raw, side, side))
        desc = f"{os.path.relpath(victim, here)} declares {side} x {side}"
    elif kind in ("garbage", "empty"):
        _write(victim, bytes(rng.randrange(256) for _ in range(len(raw))) if kind == "garbage" else b"")
    elif kind == "one image":
        for name in sorted(os.listdir(os.path.join(d, "b")))[1:]:
            os.remove(os.path.join(d, "b", name))
        desc = "class b has one image"
    elif kind == "empty class":
        os.mkdir(os.path.join(d, "c"))
        desc = "an empty class folder c"
    elif kind == "one class":
        shutil.rmtree(os.path.join(d, "b"))
        desc = "one class folder"
    elif kind in ("odd size", "rgb"):
        a = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (9, 9) if kind == "odd size" else (8, 8, 3))
        Image.fromarray(a.astype(np.uint8), "L" if kind == "odd size" else "RGB").save(victim)
        cls = INVALID if kind == "odd size" else ANY
    else:  # files the loader does not read
        _write(os.path.join(d, "a", "notes.txt"), "not an image")
        _write(os.path.join(d, "README.md"), "my digits")
        os.mkdir(os.path.join(d, ".cache"))
        shutil.copy(victim, os.path.join(d, ".cache"))
        cls, desc = SAME, "a text file in a class, a README and a hidden folder of images"
    return Case(_train(w, "out", data=d), cls, "data folder: " + desc, _same_run(os.path.join(here, "out"), w.fresh),
                kept=("data",), memory=1 << 30)


def _npz_case(w, rng, kind, here):
    x, y = w.pixels.copy(), w.labels.copy()
    k = rng.randrange(len(y))
    arrays, cls = {"x": x, "y": y}, INVALID
    changed = {"same pixels": {}, "x float": {"x": x.astype(np.float32)}, "x int64": {"x": x.astype(np.int64)},
               "y float": {"y": y.astype(np.float64)}, "one class": {"y": y * 0}, "x 2-d": {"x": x.reshape(24, 64)},
               "length": {"y": y[:-1]}, "y strings": {"y": y.astype(str)}, "pickled": {"x": x.astype(object)},
               "y 2-d": {"y": y[:, None]}, "no images": {"x": x[:0], "y": y[:0]}}.get(kind, {})
    arrays.update(changed)
    if kind in ("y huge", "y negative", "y sparse"):
        y[k] = {"y huge": 10 ** 12, "y negative": -1, "y sparse": 1000}[kind]
        cls = ANY if kind == "y sparse" else INVALID
    elif kind == "no y":
        del arrays["y"]
    path = os.path.join(here, "d.npz")
    np.savez(path, **arrays)
    desc = kind
    if kind in ("truncate", "flip"):
        data, desc = (truncated if kind == "truncate" else flipped)(rng, _read(path))
        _write(path, data)
    if kind in ("same pixels", "flip"):
        cls = SAME  # the folder's images in its order; a flip may hit a zip field that changes nothing
    return Case(_train(w, "out", data=path), cls, f"data .npz: {desc}", _same_run(os.path.join(here, "out"), w.fresh),
                kept=("d.npz",), memory=1 << 30)


def data_case(w, rng, i, here):
    if i < len(PNG_KINDS):
        return _png_case(w, rng, PNG_KINDS[i], here)
    return _npz_case(w, rng, NPZ_KINDS[i - len(PNG_KINDS)], here)


# -- ONNX graphs (images -> Conv 3x3 pad 1 -> Relu -> GlobalAveragePool -> Flatten -> Gemm) -----------

ONNX_KINDS = ("auto_pad SAME_UPPER", "auto_pad SAME_LOWER", "auto_pad and pads", "auto_pad VALID", "auto_pad NOTSET",
              "opset", "opset", "fp16 weight", "int32 weight", "double input", "nan weight", "inf weight",
              "huge weight", "stride 3", "stride 2", "dilation 2", "group 2", "kernel 5", "explicit defaults",
              "input 64", "input rank 3", "no bias", "unused initializer", "doc strings", "transB 0",
              "output renamed", "truncate", "flip", "flip", "weight shape")


CONV_ATTRS = {"stride 3": {"strides": [3, 3]}, "stride 2": {"strides": [2, 2]}, "dilation 2": {"dilations": [2, 2]},
              "group 2": {"group": 2}, "kernel 5": {"kernel_shape": [5, 5]},
              "explicit defaults": {"strides": [1, 1], "dilations": [1, 1], "group": 1}}


def _attrs(node, drop=(), **set_):
    keep = [a for a in node.attribute if a.name not in drop and a.name not in set_]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(k, v) for k, v in set_.items()])


def _onnx_mutation(rng, m, kind):
    """Mutate the model in place; returns its class."""
    g = m.graph
    conv, gemm = g.node[0], g.node[-1]
    inits = {t.name: t for t in g.initializer}

    def put(name, array):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))
    if kind.startswith("auto_pad"):
        mode = kind.split()[1]
        _attrs(conv, drop=() if mode in ("and", "NOTSET") else ("pads",), auto_pad="SAME_UPPER" if mode == "and" else mode)
        return {"SAME_UPPER": SAME, "SAME_LOWER": SAME, "NOTSET": SAME, "VALID": ANY}.get(mode, INVALID)
    if kind == "opset":
        m.opset_import[0].version = rng.choice([99, 1000, 0, 7])
    elif kind in ("fp16 weight", "int32 weight", "nan weight", "inf weight", "huge weight", "weight shape"):
        name = rng.choice(sorted(inits)) if kind in ("nan weight", "inf weight", "huge weight") else \
            "net.fc.weight" if kind == "int32 weight" else "net.c.weight"
        a = numpy_helper.to_array(inits[name]).copy()
        if kind in ("nan weight", "inf weight", "huge weight"):
            a.reshape(-1)[rng.randrange(a.size)] = {"nan weight": np.nan, "inf weight": -np.inf, "huge weight": 1e38}[kind]
        put(name, a.astype(np.float16) if kind == "fp16 weight" else a.astype(np.int32) if kind == "int32 weight"
            else a.reshape(16, 1, 9, 1) if kind == "weight shape" else a)
        return ANY if kind == "huge weight" else INVALID
    elif kind == "double input":
        g.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    elif kind in CONV_ATTRS:
        _attrs(conv, **CONV_ATTRS[kind])
        return SAME if kind == "explicit defaults" else ANY if kind == "stride 2" else INVALID
    elif kind == "input 64":
        for d in g.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_value = 64
    elif kind == "input rank 3":
        del g.input[0].type.tensor_type.shape.dim[3]
    elif kind == "no bias":
        g.initializer.remove(inits["net.fc.bias"])
    elif kind == "unused initializer":
        g.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "zz_unused"))
        return ANY
    elif kind == "doc strings":
        m.producer_name, m.doc_string, g.doc_string, conv.doc_string = "fuzz", "a model", "a graph", "a conv"
        return SAME
    elif kind == "transB 0":
        _attrs(gemm, transB=0)
    elif kind == "output renamed":
        g.output[0].name = "zz_nowhere"
    return INVALID


def onnx_case(w, rng, i, here):
    kind = ONNX_KINDS[i]
    m = onnx.load(w.onnx)
    cls, desc = _onnx_mutation(rng, m, kind), kind
    data = m.SerializeToString()
    if kind in ("truncate", "flip"):
        data, desc = (truncated if kind == "truncate" else flipped)(rng, data)
        cls = INVALID if kind == "truncate" else ANY
    _write(os.path.join(here, "m.onnx"), data)
    return Case(["export", "m.onnx", "--out", "out", "--batch", "8", "--quiet"], cls, "ONNX " + desc,
                _same_export(os.path.join(here, "out"), w.exported), kept=("m.onnx",))


# -- flags of every subcommand ---------------------------------------------------------------------

def _bad(cmd, flag, *values):
    return [(cmd, [flag, v], INVALID) for v in values]


FLAGS = [
    *_bad("train", "--lr", "nan", "inf", "-inf", "0", "-0.05", "0.6", ""),
    *_bad("train", "--momentum", "nan", "-0.1", "1", "inf"),
    *_bad("train", "--weight-decay", "nan", "inf", "-1", "0.6"),
    *_bad("train", "--lr-gamma", "nan", "inf", "-1"),
    *_bad("train", "--lr-milestones", "nan", "2", "0.5,0.2", "-1", "inf"),
    *_bad("train", "--seed", "-1", str(2 ** 64), "", "1.5"),
    *_bad("train", "--smd", "nan", "1", "-0.1"),
    *_bad("train", "--slu-target", "nan", "0", "1.5"),
    *_bad("train", "--slu-beta", "nan", "inf", "-1"),
    *_bad("train", "--slu-band", "nan", "1", "-0.1"),
    *_bad("train", "--slu-gate-init", "nan", "0", "1"),
    *_bad("train", "--psg-tau", "nan", "-1"),
    *_bad("train", "--psg-ratio", "nan", "0", "1.5"),
    *_bad("train", "--psg-tile", "0", "-1", "3"),
    *_bad("train", "--batch-size", "0", "-1", "300", "64", "16"),  # 64: more than the images; 16: than the plan
    *_bad("train", "--epochs", "0", "-1", "nan"),
    *_bad("train", "--size", "0", "-1", "2000", "16"),  # 16: the --init plan takes 8 x 8
    *_bad("train", "--channels", "2", "3"),
    *_bad("train", "--board", "", "pynq-z1", "zcu104"),  # zcu104: the --init plan is for pynq-z2
    *_bad("train", "--engine", "", "nope"),
    *_bad("train", "--model", "", "resnet9", "resnet20"),  # resnet20: the --init plan is a resnet8
    *_bad("train", "--dataset", "", "imagenet"),
    *_bad("train", "--data-dir", "", "nowhere"),
    *_bad("train", "--init", "", "nowhere"),
    *_bad("train", "--out", ""),
    *_bad("train", "--slu-weighting", "", "nope"),
    *_bad("train", "--slu-exec", "", "mask"),
    *_bad("train", "--precision", "", "fp16", "fp32"),
    *_bad("train", "--backend", "", "tpu"),
    *_bad("train", "--preset", "", "nope"),
    *_bad("train", "--lr-decay", "0.1"),
    *_bad("resume", "--init", "nowhere"), *_bad("resume", "--lr", "0.1"), *_bad("resume", "--epochs", "3"),
    *_bad("resume", "--out", ""), *_bad("resume", "--data-dir", "nowhere"), *_bad("resume", "--slu-target", "nan"),
    *_bad("plan", "--batch", "0", "-1", "300", "nan", ""), *_bad("plan", "--seed", "-1", str(2 ** 64)),
    ("plan", ["--gate-init", "0.5"], INVALID),
    *[("plan", ["--slu", "--gate-init", v], INVALID) for v in ("nan", "0", "1", "inf")],
    *_bad("plan", "--model", ""), *_bad("plan", "--dataset", "", "folder"), *_bad("plan", "--board", "", "pynq-z1"),
    *_bad("plan", "--out", ""), ("plan", ["--batch=8"], SAME), ("plan", ["--seed", "00"], SAME),
    *_bad("export", "--batch", "0", "-1", "300", "nan", ""), *_bad("export", "--board", "", "pynq-z1"),
    *_bad("export", "--out", ""), *_bad("export", "@source", "", "nowhere.onnx"), ("export", ["--batch=8"], SAME),
    *_bad("estimate", "--plan", "", "nowhere"), *_bad("estimate", "--energy-model", "", "nowhere.json", "{data}"),
    *_bad("estimate", "--board", "", "pynq-z1", "zcu104"), ("estimate", ["--plan", "{plan}/plan.json"], SAME),
    ("estimate", [], PIPE),
    *_bad("estimate-model", "--batch", "0", "-1", "300", "nan"), *_bad("estimate-model", "--model", "", "resnet9"),
    *_bad("estimate-model", "--dataset", "", "folder", "imagenet"),
    *_bad("report", "--board", "", "pynq-z1"), ("report", ["--board", "zcu104"], ANY),  # beside the pynq-z2 one
    *_bad("report", "--model", "", "nowhere.json", "{data}"), *_bad("report", "@run", "", "nowhere"),
    *_bad("compare", "--out", "", "keep.json", "adir"), *_bad("compare", "@runs", "b1", "b1 nowhere"),
    *_bad("info", "--size", "0", "-1", "nan"), *_bad("info", "--num-classes", "0", "-1"),
    *_bad("info", "--in-channels", "0", "-1"), *_bad("info", "--model", "", "resnet9"),
    ("info", ["--size", "32"], SAME), ("info", ["--num-classes=10"], SAME),
    *_bad("deploy", "--epochs", "0"), *_bad("deploy", "--batch", "0"), *_bad("deploy", "--out", ""),
    *_bad("deploy", "--board", ""), *_bad("deploy", "--plan", "nowhere"), *_bad("deploy", "--data-dir", "nowhere"),
]


def _base(w, cmd, here):
    """The unmutated command line of ``cmd`` and how an exit-0 run's numbers are compared."""
    out = os.path.join(here, "out")
    if cmd == "train":
        return _train(w, "out"), _same_run(out, w.fresh)
    if cmd == "resume":
        return _resume(w), _same_run(_copy(w.stopped, here, "run"), w.resume)
    if cmd == "plan":
        return ["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "8", "--out", "out"], \
            _same_files(out, w.plan_cli)
    if cmd == "export":
        return ["export", w.onnx, "--out", "out", "--batch", "8", "--quiet"], _same_export(out, w.exported)
    if cmd == "estimate":
        return ["estimate", "--plan", w.plan], _same_out(w.estimate)
    if cmd == "estimate-model":
        return ["estimate", "--model", "resnet8", "--dataset", "digits", "--batch", "8"], None
    if cmd == "report":
        return ["energy", "report", "run"], _same_report(_copy(w.resumed, here, "run"), w.report)
    if cmd == "compare":
        for run in ("b1", "b2"):
            _report_copy(w, here, run)
        _write(os.path.join(here, "keep.json"), "keep me")
        os.mkdir(os.path.join(here, "adir"))
        return ["energy", "compare", "b1", "b2", "--out", "c.json"], None
    if cmd == "info":
        return ["info", "--model", "resnet8"], _same_out(w.info)
    return ["deploy", "--plan", w.plan, "--board", "pynq-z2", "--dataset", "folder", "--data-dir", w.data,
            "--out", "out"], None


def _with(argv, tokens):
    """argv with each flag of ``tokens`` set (a value replaces the flag's), ``--f=v`` forms, and
    @source / @run / @runs for the positional arguments."""
    argv, i = list(argv), 0
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("@"):
            at = 1 if t == "@source" else 2
            argv[at:at + (2 if t == "@runs" else 1)] = tokens[i + 1].split() if t == "@runs" else [tokens[i + 1]]
            i += 1
        elif "=" in t:
            flag = t.split("=")[0]
            if flag in argv:
                del argv[argv.index(flag):argv.index(flag) + 2]
            argv.append(t)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            if t in argv:
                argv[argv.index(t) + 1] = tokens[i + 1]
            else:
                argv += [t, tokens[i + 1]]
            i += 1
        else:
            argv.append(t)
        i += 1
    return argv


def flags_case(w, rng, i, here):
    cmd, tokens, cls = FLAGS[i]
    argv, same = _base(w, cmd, here)
    tokens = [t.format(plan=w.plan, data=w.data) for t in tokens]
    shown = " ".join(t if t.startswith("--") else repr(t) for t in tokens)
    kept = {"report": ("run/energy/", "run/config.json", "run/metrics.jsonl"), "compare": ("b1", "b2", "keep.json")}
    argv = _with(argv, tokens)
    unnamed = () if any("plan" in a for a in argv[1:]) or cmd == "resume" else ("plan.json",)
    return Case(argv, cls, f"e2t {cmd} {shown or 'printing into a closed pipe'}", same, kept.get(cmd, ()),
                cmd == "report", unnamed, closed_pipe() if cls == PIPE else None)


# -- the test ----------------------------------------------------------------------------------------

TARGETS = {"plan": (60, plan_case), "weights": (len(WEIGHT_KINDS), weights_case),
           "checkpoint": (len(CKPT_KINDS), ckpt_case), "config": (18, config_case), "metrics": (10, metrics_case),
           "energy-model": (12, emodel_case), "data": (len(PNG_KINDS) + len(NPZ_KINDS), data_case),
           "onnx": (len(ONNX_KINDS), onnx_case), "flags": (len(FLAGS), flags_case)}
CASES = [f"{target}-{i:03d}" for target, (n, _) in TARGETS.items() for i in range(n)]


@pytest.mark.parametrize("case", CASES)
def test_fuzz(world, case, tmp_path):
    target, index = case.rsplit("-", 1)
    here = str(tmp_path)
    c = TARGETS[target][1](world, random.Random(f"{SEED}:{case}"), int(index), here)
    before = digest(here)
    with pytest.MonkeyPatch.context() as mp:
        if not c.plots:
            mp.setattr(energy_report, "_plots", _no_plots)
        o = run_cli(c.argv, here, c.stdout, c.memory)
    if c.stdout is not None:
        with contextlib.suppress(BrokenPipeError):
            c.stdout.close()
    after = digest(here)
    lost = [k for k in before if k.startswith(c.kept) and after.get(k) != before[k]] if c.kept else []
    problem = verdict(o, c.cls, changes(before, after), c.same, lost)
    if problem is None and o.rc == 2 and any(name in o.err for name in c.unnamed):
        problem = f"the refusal names a file the command line never gave: {o.err.strip()}"
    if problem is None and digest(world.shared) != world.shared_digest:
        problem = "the shared inputs (plan, data folder, ONNX file, energy model) were changed"
    if os.environ.get("E2T_FUZZ_LOG"):  # every case's outcome, one JSON line each
        with open(os.environ["E2T_FUZZ_LOG"], "a") as f:
            f.write(json.dumps({"case": case, "class": c.cls, "mutation": c.desc, "exit": o.rc, "stderr": o.err[-300:],
                                "traceback": o.error, "problem": problem}) + "\n")
    assert problem is None, f"{case} [{c.cls}] {c.desc}: {problem}"
    shutil.rmtree(here)  # a passed case's copies (a failed one's stay for a look)
