"""A training run's lifecycle through ``e2t train``: every setting checked before anything is
created, no dead end when a run stops before its first checkpoint, and a resumed checkpoint (or
config.json, metrics.jsonl) trusted only once every part of it was checked. Epochs are faked
here (the numbers of training are other tests'): what is tested is what lands on disk."""
import hashlib
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from contract.errors import E2TError
from e2t.cli import build_parser, config_from_args, main
from host.plan import planbuild, weightsfile
from host.train.config import TrainConfig
from host.train.trainer import CHECKPOINT, EngineTrainer

from conftest import ROOT

EMU = ["--backend", "emu", "--model", "resnet8", "--dataset", "digits", "--batch-size", "32", "--lr", "0.05",
       "--epochs", "2", "--quiet"]
TORCH = ["--model", "resnet8", "--dataset", "digits", "--batch-size", "64", "--epochs", "2", "--quiet"]


def one_line_error(capsys, argv, alone: bool = True) -> str:
    """The error's one line; ``alone``: the only line (a run that started also says which power
    rails it found)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("e2t: error: ") and "Traceback" not in err and err.count("e2t: error") == 1, err
    assert err == last or not alone, err
    return last[len("e2t: error: "):]


def tree(folder) -> dict:
    """Every file under ``folder`` with a hash of its bytes (folders as None): 'nothing changed'."""
    out = {}
    for d, dirs, names in os.walk(folder):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), folder)] = None
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def trainer_class(backend: str):
    if backend == "emu":
        return EngineTrainer
    from reference.train import Trainer
    return Trainer


def fake_epochs(monkeypatch, backend: str, stop_at: int, exc=KeyboardInterrupt):
    """Epochs that only count (their numbers are other tests' business); epoch ``stop_at`` raises ``exc``."""
    cls, calls = trainer_class(backend), []

    def epoch(self):
        calls.append(1)
        if len(calls) == stop_at:
            raise exc("engine stopped answering") if exc is E2TError else exc
        self.epoch += 1
        self.iteration += self.iters_per_epoch
        return {"epoch": self.epoch, "iteration": self.iteration, "train_loss": None, "kept_iterations": 0,
                "dropped_iterations": 0, "seconds": 1.0, "images_per_s": 0.0}
    monkeypatch.setattr(cls, "train_epoch", epoch)
    if backend == "emu":
        monkeypatch.setattr(cls, "evaluate", lambda self: {"test_acc": 0.1})
    else:
        monkeypatch.setattr("reference.train.evaluate", lambda model, ds, device, batch_size=500: {"test_acc": 0.1})


def no_training(monkeypatch, backend: str = "emu"):
    """fit() must not be reached: the command is refused before."""
    def fit(self):
        raise AssertionError("trained")
    monkeypatch.setattr(trainer_class(backend), "fit", fit)


# -- 4, 5, 6, 7: every setting checked before anything is created ---------------------------------

@pytest.mark.parametrize("flags,message", [
    (["--lr", "nan"], "--lr must be finite, got nan"),
    (["--lr", "inf"], "--lr must be finite, got inf"),
    (["--backend", "emu", "--lr", "0.6"], "--backend emu's integer update needs 0 < lr < 0.5"),
    (["--weight-decay", "nan"], "--weight-decay must be finite"),
    (["--weight-decay", "inf"], "--weight-decay must be finite"),
    (["--backend", "emu", "--weight-decay", "0.6"], "--weight-decay 0.6: --backend emu's integer update needs"),
    (["--psg", "--precision", "fixed", "--weight-decay", "0.6"], "--weight-decay 0.6: --psg's integer update"),
    (["--lr-gamma", "nan"], "--lr-gamma must be finite"),
    (["--lr-gamma", "inf"], "--lr-gamma must be finite"),
    (["--lr-gamma", "-1"], "--lr-gamma must be > 0"),
    (["--backend", "emu", "--lr-gamma", "10"], "the schedule reaches 1"),
    (["--slu-beta", "nan"], "--slu-beta must be finite"),
    (["--psg-tau", "nan"], "--psg-tau must be finite"),
    (["--momentum", "nan"], "--momentum must be finite"),
    (["--seed", "-1"], "--seed must be 0 .. 4294967295, got -1"),
    (["--board", "pynqz2"], "unknown board 'pynqz2' (known: "),
    (["--backend", "emu", "--batch-size", "300"], "--batch-size 300 exceeds the pynq-z2 engine's largest batch 256"),
    (["--backend", "emu", "--size", "64"], "--size 64 exceeds the pynq-z2 engine's largest image 32 x 32"),
    (["--backend", "emu", "--precision", "fp32"], "--precision fp32: --backend emu computes in fixed point"),
    (["--init", "plans/x"], "--init starts --backend emu or pynq from a plan"),
])
def test_bad_settings_are_one_line_before_anything_is_created(capsys, tmp_path, monkeypatch, flags, message):
    for backend in ("emu", "torch"):
        no_training(monkeypatch, backend)
    out = tmp_path / "runs" / "r"
    assert message in one_line_error(capsys, ["train", "--model", "resnet8", "--dataset", "digits", "--epochs", "1",
                                              *flags, "--out", str(out)])
    assert os.listdir(tmp_path) == []


def test_the_energy_model_is_checked_before_the_first_epoch(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("energy.model.DATA", str(tmp_path / "no-models"))
    no_training(monkeypatch, "torch")
    err = one_line_error(capsys, ["train", *TORCH, "--out", str(tmp_path / "r")])
    assert "no energy model for board 'pynq-z2'" in err and not (tmp_path / "r").exists()


def test_saved_settings_of_the_wrong_type_are_named():
    for saved, message in [({"lr": "0.1"}, "run/config.json: --lr must be a number, got '0.1'"),
                           ({"psg": "false"}, "--psg must be true or false"),
                           ({"epochs": 2.5}, "--epochs must be an integer"),
                           ({"lr_milestones": "0.5"}, "--lr-milestones must be a list of numbers"),
                           ({"board": ["pynq-z2"]}, "--board must be a name"),
                           ([1, 2], "list is not a config")]:
        with pytest.raises(E2TError) as e:
            TrainConfig.from_dict(saved, "run/config.json")
        assert message in str(e.value)


def test_the_engine_backends_imply_fixed_point_and_runs_record_it():
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--backend", "emu"])).precision == "fixed"
    assert config_from_args(parse(["train", "--backend", "pynq"])).to_dict()["precision"] == "fixed"
    assert config_from_args(parse(["train"])).precision == "fp32"
    # config.json of older runs names the precision it used
    assert TrainConfig.from_dict({"backend": "emu", "precision": "fixed"}) == TrainConfig(backend="emu")
    assert TrainConfig.from_dict({"precision": "fp32"}) == TrainConfig()


def test_the_size_limit_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "the engine takes at most 32 x 32 on pynq-z2" in " ".join(capsys.readouterr().out.split())


# -- 1: a run stopped before its first checkpoint leaves nothing and says so ---------------------

@pytest.mark.parametrize("backend", ["emu", "torch"])
def test_stopped_in_epoch_1_leaves_nothing_behind(capsys, tmp_path, monkeypatch, backend):
    flags = EMU if backend == "emu" else TORCH
    fake_epochs(monkeypatch, backend, stop_at=1)
    new = tmp_path / "new" / "run"
    assert one_line_error(capsys, ["train", *flags, "--out", str(new)], alone=False) == \
        "nothing was saved (interrupted in epoch 1); run the same command again"
    assert os.listdir(tmp_path) == []  # the folders it made are gone too
    mine = tmp_path / "mine"
    mine.mkdir()
    fake_epochs(monkeypatch, backend, stop_at=1, exc=E2TError)
    assert one_line_error(capsys, ["train", *flags, "--out", str(mine)], alone=False) == \
        "engine stopped answering; nothing was saved (stopped in epoch 1)"
    assert os.listdir(tmp_path) == ["mine"] and os.listdir(mine) == []  # a folder that was there stays


def test_stopped_after_a_checkpoint_says_how_to_continue(capsys, tmp_path, monkeypatch):
    fake_epochs(monkeypatch, "emu", stop_at=2)
    out = tmp_path / "run"
    assert one_line_error(capsys, ["train", *EMU, "--out", str(out)], alone=False) == \
        f"interrupted; the run is saved up to epoch 1: continue with e2t train --resume --out {out}"
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "metrics.jsonl"]  # no temporary left


def test_resuming_a_run_killed_in_epoch_1_starts_it_from_the_beginning(capsys, tmp_path, monkeypatch):
    """kill -9 in epoch 1 leaves config.json (and maybe a torn record, a temporary) but no
    checkpoint: --resume starts from epoch 0 with the saved config, its --init plan included."""
    plan, weights, _ = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32, seed=7)
    planbuild.save(str(tmp_path / "plan"), plan, weights)
    out = tmp_path / "run"
    cfg = config_from_args(build_parser().parse_args(["train", *EMU, "--init", str(tmp_path / "plan")]))
    EngineTrainer(cfg, str(out), progress=False, log=lambda m: None)  # created, then killed
    (out / ".tmp-3f2a").write_bytes(b"half a checkpoint")
    (out / "metrics.jsonl").write_text('{"epoch": 1, "train_lo')
    assert "already holds a run: pass --resume" in one_line_error(capsys, ["train", *EMU, "--out", str(out)])
    started = []
    monkeypatch.setattr(EngineTrainer, "fit", lambda self: started.append(self) or [])
    assert main(["train", "--resume", "--out", str(out)]) == 0
    t = started[0]
    assert (t.epoch, t.iteration, t.cfg) == (0, 0, cfg) and t.run.saved_epoch is None
    init = weightsfile.read(str(tmp_path / "plan"), t.plan)
    assert all(np.array_equal(v, init[k]) for k, v in t.session.arrays().items())
    assert sorted(os.listdir(out)) == ["config.json", "metrics.jsonl"] and (out / "metrics.jsonl").read_text() == ""


# -- 2, 3: a checkpoint (and config.json, metrics.jsonl) is checked before anything is written -----

def _saved_run(tmp_path_factory, backend: str, make):
    """A ``backend`` run folder with the checkpoint of epoch 1 of 2 (epochs faked); ``make(out)``
    builds its trainer."""
    mp = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("saved") / "run"
    try:
        fake_epochs(mp, backend, stop_at=2)
        with pytest.raises(KeyboardInterrupt):
            make(str(out)).fit()
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def saved_emu_run(tmp_path_factory):
    """An emu run folder with the checkpoint of epoch 1 of 2."""
    return _saved_run(tmp_path_factory, "emu", lambda out: EngineTrainer(
        config_from_args(build_parser().parse_args(["train", *EMU])), out, progress=False, log=lambda m: None))


def _rewrite(path, change):
    """checkpoint.npz with ``change(meta, arrays)`` applied."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        arrays = {k: z[k] for k in z.files if k != "meta"}
    change(meta, arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    path.write_bytes(buf.getvalue())


def _first(arrays, prefix, dtype):
    return next(k for k, v in arrays.items() if k.startswith(prefix) and v.dtype == dtype and v.size > 1)


TAMPERED = {
    "missing array": (lambda m, a: a.pop(_first(a, "ddr/", np.int32)), "does not fit the run: it lacks ddr/"),
    "extra array": (lambda m, a: a.update({"ddr/extra.wgt": np.zeros(3, np.int8)}), "has no place for ddr/extra.wgt"),
    "narrower dtype": (lambda m, a: a.update({(k := _first(a, "ddr/", np.int32)): a[k].astype(np.int16)}),
                       "is int16 ["),
    "float16": (lambda m, a: a.update({(k := _first(a, "host/", np.float32)): a[k].astype(np.float16)}),
                "is float16 ["),
    "broadcast shape": (lambda m, a: a.update({(k := _first(a, "host/", np.float32)): a[k].reshape(-1)[:1]}),
                        "is float32 [1], the run's is float32"),
    "NaN": (lambda m, a: a[_first(a, "host/", np.float32)].flat.__setitem__(0, np.nan),
            "holds NaN or infinite values"),
    "epoch 99": (lambda m, a: m.update(epoch=99), "epoch 99 is not one of the run's epochs 1..2"),
    "epoch -1": (lambda m, a: m.update(epoch=-1), "epoch -1 is not one of the run's epochs 1..2"),
    "iteration": (lambda m, a: m.update(iteration=m["iteration"] + 1), "is not the end of epoch 1"),
    "exps": (lambda m, a: m["exps"].pop("conv1"), "exps does not hold the exponents"),
    "exps range": (lambda m, a: m["exps"].update(conv1=[99, 0]), "exps does not hold the exponents"),
    "config": (lambda m, a: m["config"].update(lr=0.01), "belongs to a different config"),
    "config type": (lambda m, a: m["config"].update(lr="0.05"), "--lr must be a number"),
    "meta": (lambda m, a: m.pop("exps"), "its meta is not an engine checkpoint's"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_checkpoint_is_refused_and_nothing_changes(capsys, tmp_path, monkeypatch, saved_emu_run, case):
    change, message = TAMPERED[case]
    out = tmp_path / "run"
    shutil.copytree(saved_emu_run, out)
    _rewrite(out / CHECKPOINT, change)
    (out / ".tmp-0001").write_bytes(b"left by a kill")
    before = tree(out)
    no_training(monkeypatch)
    assert message in one_line_error(capsys, ["train", "--resume", "--out", str(out)])
    assert tree(out) == before


def _metrics_dir(out):
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()


BROKEN_FILES = {
    "config.json a folder": (lambda out: ((out / "config.json").unlink(), (out / "config.json").mkdir()),
                             "config.json cannot be read"),
    "config.json a string for a number": (
        lambda out: (out / "config.json").write_text(
            (out / "config.json").read_text().replace('"lr": 0.05', '"lr": "0.05"')), "--lr must be a number"),
    "config.json nested too deep": (lambda out: (out / "config.json").write_text("[" * 100000),
                                    "config.json is corrupt"),
    "metrics.jsonl a folder": (_metrics_dir, "metrics.jsonl cannot be read"),
    "metrics.jsonl torn in the middle": (
        lambda out: (out / "metrics.jsonl").write_text('{"epoch": 1, "tr\n{"epoch": 1}\n'),
        "metrics.jsonl: line 1 is not a metrics record"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_a_broken_run_file_is_refused_and_nothing_changes(capsys, tmp_path, monkeypatch, saved_emu_run, case):
    change, message = BROKEN_FILES[case]
    out = tmp_path / "run"
    shutil.copytree(saved_emu_run, out)
    change(out)
    before = tree(out)
    no_training(monkeypatch)
    assert message in one_line_error(capsys, ["train", "--resume", "--out", str(out)])
    assert tree(out) == before


def test_resume_with_another_init_is_one_line(capsys, tmp_path, monkeypatch, saved_emu_run):
    no_training(monkeypatch)
    err = one_line_error(capsys, ["train", "--resume", "--out", str(saved_emu_run), "--init", str(tmp_path)])
    assert err.startswith(f"--init {tmp_path} differs from the run's saved None: --resume continues")


def test_resume_drops_a_torn_last_record_and_stale_temporaries(tmp_path, monkeypatch, saved_emu_run):
    """What a kill during the append of epoch 2's record (or during a checkpoint write) leaves:
    the checkpoint is the truth, the torn line and the temporary go."""
    out = tmp_path / "run"
    shutil.copytree(saved_emu_run, out)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "iteration": 8')
    (out / ".tmp-c0ffee").write_bytes(b"half a checkpoint")
    resumed = []
    monkeypatch.setattr(EngineTrainer, "fit", lambda self: resumed.append(self) or [])
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert (resumed[0].epoch, resumed[0].run.saved_epoch) == (1, 1)
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "metrics.jsonl"]
    assert [r["epoch"] for r in resumed[0].run.metrics()] == [1] and (out / "metrics.jsonl").read_text().endswith("}\n")


@pytest.fixture(scope="module")
def saved_torch_run(tmp_path_factory):
    """A torch run folder with the checkpoint of epoch 1 of 2."""
    return _saved_run(tmp_path_factory, "torch", lambda out: trainer_class("torch")(
        config_from_args(build_parser().parse_args(["train", *TORCH])), out, progress=False, log=lambda m: None,
        device="cpu"))


def _torch_change(state, case):
    import torch
    name = next(k for k, v in state["model"].items() if v.dtype == torch.float32 and v.numel() > 1)
    if case == "no psg":
        del state["psg"]
    elif case == "epoch 99":
        state["epoch"] = 99
    elif case == "missing tensor":
        del state["model"][name]
    elif case == "float16":
        state["model"][name] = state["model"][name].half()
    elif case == "broadcast shape":
        state["model"][name] = state["model"][name].flatten()[:1]
    elif case == "momentum shape":  # (faked epochs never stepped SGD: no buffers yet)
        state["optimizer"]["state"][0] = {"momentum_buffer": torch.zeros(1)}


@pytest.mark.parametrize("case,message", [
    ("no psg", "is not an e2t torch checkpoint"),
    ("epoch 99", "epoch 99 is not one of the run's epochs 1..2"),
    ("missing tensor", "does not fit the run: it lacks "),
    ("float16", "is float16 "),
    ("broadcast shape", "is float32 [1], the run's is float32"),
    ("momentum shape", "optimizer.0 is float32 [1]"),
])
def test_a_tampered_torch_checkpoint_is_refused_and_nothing_changes(capsys, tmp_path, monkeypatch, saved_torch_run,
                                                                    case, message):
    import torch
    out = tmp_path / "run"
    shutil.copytree(saved_torch_run, out)
    path = out / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    _torch_change(state, case)
    torch.save(state, path)
    before = tree(out)
    no_training(monkeypatch, "torch")
    assert message in one_line_error(capsys, ["train", "--resume", "--out", str(out)])
    assert tree(out) == before


# -- 8: make run says what it removes -------------------------------------------------------------

def test_make_run_says_it_removes_the_last_run(tmp_path):
    if shutil.which("make") is None or not os.path.exists(os.path.join(ROOT, ".venv", "bin", "e2t")):
        pytest.skip("needs make and the project's .venv (make venv)")
    old = tmp_path / "make-run"
    old.mkdir()
    (old / "config.json").write_text("{}")
    stamp = tmp_path / "installed"  # newer than requirements.txt: the venv is taken as installed
    stamp.write_text("")
    r = subprocess.run(["make", "-s", "-C", ROOT, "run", f"STAMP={stamp}", f"RUN_OUT={old}", "RUN_ARGS=--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"make run: removing {old}, the last make run's folder" in r.stdout and not old.exists()
