"""Training on the engine: the driver against the emulated overlay (integers equal to the CPU
build's, timeouts, named refusals, stray addresses, register-map mismatches), the engine
session's ops, and the on-engine trainer (SMD makes no engine call, SLU runs gated blocks on
their sub-batch, a killed run resumes to bit-identical weights)."""
import json
import os

import numpy as np
import pytest

from contract import numerics as nx
from contract.errors import E2TError
from host.engine.driver import BadOp, BadShape, EngineError, EngineTimeout, check_hwh_registers
from host.engine.emulated import EmulatedOverlay
from host.engine.session import EngineSession
from host.plan import planbuild
from host.train.config import TrainConfig
from host.train.trainer import CHECKPOINT, EngineTrainer

from conftest import kill_in_epoch_2
from hls import csim

QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def cpu():
    return csim.Engine("fast", log=lambda m: None)


@pytest.fixture(scope="module")
def small():
    plan, _, arrays = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 8, seed=2, slu=True)
    return plan, arrays


def _session(small, **kw):
    plan, arrays = small
    return EngineSession(plan, arrays, EmulatedOverlay("pynq-z2", log=lambda m: None, **kw))


def test_emulated_ops_give_the_cpu_build_s_integers(small, cpu):
    plan, arrays = small
    s = _session(small)
    rng = np.random.default_rng(0)
    op = next(o for o in plan.convs() if o["name"] == "blocks.1.conv1")  # stride 2, 16 -> 32
    n = 5
    x_q = rng.integers(-128, 128, (n, op["c_in"], op["h"], op["w"]))
    y, r = s.conv_fwd(op, x_q)
    want, r2, _ = cpu.conv_fwd(x_q, arrays[f"{op['name']}.wgt"], op["stride"], op["pad"])
    assert r == r2 and np.array_equal(y, want)
    g_q = rng.integers(-3000, 3000, (n, op["c_out"], op["ho"], op["wo"]))
    s.set_grad(op, g_q)
    st = s.conv_wgrad(op, n, "abs", 1 << 20)
    g_msb, sign, st2 = cpu.conv_wgrad(x_q, g_q, op["k"], op["stride"], op["pad"], "abs", 1 << 20)
    assert np.array_equal(s.buffer(op, "sgn"), sign) and np.array_equal(s.wgrad_result(op), g_msb)
    assert {k: st[k] for k in st2} == st2
    gx, r, e_ref = s.conv_bwd_data(op, n)
    want, r3, _ = cpu.conv_bwd_data(g_q, arrays[f"{op['name']}.wgt"], arrays[f"{op['name']}.wshift"], op["stride"],
                                    op["pad"], (op["h"], op["w"]))
    assert r == r3 and np.array_equal(gx, want)
    master, mom = arrays[f"{op['name']}.master"].astype(np.int64), arrays[f"{op['name']}.mom"].astype(np.int64)
    k = nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9)
    s.update(op, k)
    w, b, _ = nx.sign_update(master, op["w_exp"], mom, sign.astype(np.int64), k)
    assert np.array_equal(s.buffer(op, "master"), w) and np.array_equal(s.buffer(op, "mom"), b)
    assert s.counts["ops_conv_fwd"] == 1
    assert s.per_layer[op["name"]]["fwd"]["macs"] == {"int8x8": n * 32 * 16 * 16 * 16 * 9}
    assert s.per_layer[op["name"]]["bwd_w_pred"]["macs"]["int4x16"] == n * 32 * 16 * 16 * 16 * 9


def test_an_engine_that_never_finishes_times_out_with_the_op_named(small):
    s = _session(small, hang=True)
    s.ip.timeout_s = 0.2
    op = s.plan.convs()[0]
    with pytest.raises(EngineTimeout, match=r"CONV_FWD of layer conv1: no ap_done after 0\.\d s \(timeout 0.2 s\)"):
        s.conv_fwd(op, np.zeros((2, 1, 32, 32), np.int64))
    with pytest.raises(EngineError, match="not idle .* before the start"):
        s.conv_fwd(op, np.zeros((2, 1, 32, 32), np.int64))


class _HeldEngine:
    """A CPU build whose calls wait for ``go``: an op that is still running when the host looks."""

    def __init__(self, engine):
        import threading
        self.engine, self.go, self.entered = engine, threading.Event(), threading.Event()

    def call(self, regs, ports, **kw):
        self.entered.set()
        assert self.go.wait(10)
        return self.engine.call(regs, ports, **kw)


def test_a_weight_gradient_runs_while_the_host_works_and_any_engine_access_waits_for_it(small, cpu):
    plan, arrays = small
    s = _session(small, threaded=True)
    held = s.ip.engine = _HeldEngine(s.ip.engine)
    held.go.set()
    rng = np.random.default_rng(1)
    op = next(o for o in plan.convs() if o["name"] == "blocks.1.conv1")
    n = 3
    x_q = rng.integers(-128, 128, (n, op["c_in"], op["h"], op["w"]))
    s.conv_fwd(op, x_q)
    g_q = rng.integers(-3000, 3000, (n, op["c_out"], op["ho"], op["wo"]))
    s.set_grad(op, g_q)
    held.go.clear()
    held.entered.clear()
    done = []
    assert s.conv_wgrad(op, n, "full", then=lambda: done.append(1), wait=False) is None
    assert held.entered.wait(10)
    ctrl = s.ip.regs.control
    state = s.ip.read(ctrl["offset"])
    assert not state >> ctrl["ap_done"] & 1 and not state >> ctrl["ap_idle"] & 1 and not done  # still running
    with pytest.raises(EngineError, match="not idle"):  # the driver refuses a second start meanwhile
        s.ip.start("a second op", {"op": 1}, {})
    held.go.set()
    sgn = s.buffer(op, "sgn")  # a DDR access waits for the running op, then its follow-up runs
    assert done == [1] and s.counts["ops_conv_wgrad"] == 1
    g_full, _, _ = cpu.conv_wgrad(x_q, g_q, op["k"], op["stride"], op["pad"], "full")
    assert np.array_equal(s.wgrad_result(op), g_full) and sgn.shape == g_full.shape


def test_engine_seconds_are_the_host_s_time_in_the_calls(small):
    """A weight gradient started without waiting, the host busy for 0.3 s, then the wait: the
    inline emulated overlay ran the op inside its start, so the phase's engine seconds hold the
    start and the wait, not the host's work between them."""
    import time
    plan, _ = small
    s = _session(small)
    op = next(o for o in plan.convs() if o["name"] == "blocks.1.conv1")
    rng = np.random.default_rng(2)
    s.conv_fwd(op, rng.integers(-128, 128, (2, op["c_in"], op["h"], op["w"])))
    s.set_grad(op, rng.integers(-3000, 3000, (2, op["c_out"], op["ho"], op["wo"])))
    t0 = time.perf_counter()
    s.conv_wgrad(op, 2, "full", wait=False)
    time.sleep(0.3)
    s.wait()
    wall = time.perf_counter() - t0
    assert s.counts["ops_conv_wgrad"] == 1 and 0 < s.seconds["wgrad"] < wall - 0.25


def test_refusals_are_named_exceptions(small):
    s = _session(small)
    with pytest.raises(BadOp, match="refused the call with BAD_OP"):
        s.ip.run("op 9", {"op": 9}, {})
    with pytest.raises(BadShape, match="BAD_SHAPE"):
        s.ip.run("a 5x5 kernel", {"op": 1, "batch": 1, "c_in": 1, "h_in": 8, "w_in": 8, "c_out": 1, "kernel": 5,
                                  "stride": 1, "pad": 1}, {})
    with pytest.raises(EngineError, match=r"act address 0x123 is in no allocated buffer"):
        s.ip.run("stray", {"op": 1, "batch": 1, "c_in": 1, "h_in": 4, "w_in": 4, "c_out": 1, "kernel": 3,
                           "stride": 1, "pad": 1}, {"act": 0x123})
    with pytest.raises(EngineError, match=r"conv1: a call on 9 images; the plan's buffers hold 1\.\.8"):
        s.conv_fwd(s.plan.convs()[0], np.zeros((9, 1, 32, 32), np.int64))


def test_a_register_map_mismatch_is_refused_with_both_versions(small):
    s = _session(small)
    regs = {n: {"address_offset": o} for n, o in s.ip.register_map.items()}
    check_hwh_registers(regs)
    regs["threshold"] = {"address_offset": 0x70}
    with pytest.raises(EngineError, match=r"register 'threshold' is at 0x070 in .* but at 0x068 in this e2t's "
                                          r"register map \(version [0-9a-f]{12}\)"):
        check_hwh_registers(regs)
    del regs["op"]
    with pytest.raises(EngineError, match="register 'op' is missing"):
        check_hwh_registers(regs)


# -- the trainer -------------------------------------------------------------------------------

def _cfg(**kw):
    base = dict(backend="emu", model="resnet8", dataset="digits", epochs=2, batch_size=32, precision="fixed",
                psg=True, lr=0.05)
    return TrainConfig(**{**base, **kw})


def _load(folder):
    with np.load(os.path.join(folder, CHECKPOINT)) as z:
        return {k: z[k] for k in z.files}


def test_a_killed_run_resumes_to_bit_identical_weights(tmp_path, monkeypatch):
    cfg = _cfg(smd=0.3, slu_target=0.7, slu_beta=1e-3)
    a = EngineTrainer(cfg, str(tmp_path / "a"), **QUIET).fit()
    real = kill_in_epoch_2(EngineTrainer, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        EngineTrainer(cfg, str(tmp_path / "b"), **QUIET).fit()
    monkeypatch.setattr(EngineTrainer, "train_epoch", real)
    b = EngineTrainer(cfg, str(tmp_path / "b"), resume=True, **QUIET).fit()
    sa, sb = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert set(sa) == set(sb)
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    drop = ("seconds", "images_per_s", "engine_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in b]
    assert a[-1]["dropped_iterations"] > 0 and 0 < a[-1]["executed_fraction"] < 1
    assert (tmp_path / "a" / "plan.json").is_file()  # the trained network, as a plan


def test_smd_drops_make_no_engine_call_and_slu_gathers(tmp_path):
    t = EngineTrainer(_cfg(epochs=1, smd=0.5, slu_target=0.5), str(tmp_path / "r"), **QUIET)
    sizes = []
    real = t.session.conv_fwd

    def spy(op, x_q):
        sizes.append((op["name"], len(x_q)))
        return real(op, x_q)
    t.session.conv_fwd = spy
    r = t.train_epoch()
    kept = r["kept_iterations"]
    assert r["dropped_iterations"] > 0 and r["engine"]["ops_update"] == kept * len(t.plan.convs())
    ungated = [n for n, k in sizes if n in ("conv1", "blocks.0.conv1", "blocks.0.conv2")]
    assert len(ungated) == 3 * kept
    gated = [k for n, k in sizes if n == "blocks.1.conv2"]
    assert len(gated) <= kept and sum(gated) < 32 * kept  # only the images whose gate is on


def test_trainer_refuses_float_and_a_wrong_init(tmp_path):
    with pytest.raises(E2TError, match="--precision fp32: --backend emu computes in fixed point"):
        EngineTrainer(_cfg(precision="fp32", psg=False), str(tmp_path / "x"), **QUIET)
    plan, weights, _ = planbuild.from_model("resnet8", 3, 10, 32, "pynq-z2", 32)
    planbuild.save(str(tmp_path / "p"), plan, weights)
    with pytest.raises(E2TError, match="takes 3-channel images, digits's are 1-channel"):
        EngineTrainer(_cfg(init=str(tmp_path / "p")), str(tmp_path / "y"), **QUIET)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_cli_trains_on_the_emulated_engine(tmp_path, capsys):
    from e2t.cli import main
    out = tmp_path / "run"
    assert main(["train", "--backend", "emu", "--precision", "fixed", "--psg", "--model", "resnet8", "--dataset",
                 "digits", "--epochs", "1", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["engine"]["ops_conv_wgrad"] > 0 and 0 <= records[0]["test_acc"] <= 1
    assert "test accuracy" in capsys.readouterr().out


# -- the driver under the real pynq package -----------------------------------------------------

@pytest.fixture
def standin(tmp_path):
    pynq = pytest.importorskip("pynq")
    import pynq_standin
    yield pynq, pynq_standin
    pynq_standin.reset_pynq()


def test_the_driver_runs_under_the_real_pynq_overlay(standin, small, cpu, tmp_path):
    """pynq.Overlay parses the .hwh, binds the engine IP to e2t's DefaultIP subclass by VLNV, and the
    trainer's session runs CONV_FWD through pynq's MMIO and PynqBuffers: only the board is missing."""
    pynq, helper = standin
    from host.engine.driver import PynqOverlay, pynq_driver
    driver = pynq_driver()
    dev = helper.make_device()
    ol = PynqOverlay(pynq.Overlay(helper.write_overlay(tmp_path), download=False, device=dev))
    assert type(ol.e2t_engine_0) is driver and isinstance(ol.e2t_engine_0, pynq.DefaultIP)
    plan, arrays = small
    s = EngineSession(plan, arrays, ol)
    assert isinstance(s.ddr.buffer, pynq.buffer.PynqBuffer) and s.ddr.base >= helper.DDR_BASE
    op = plan.convs()[0]
    x_q = np.random.default_rng(1).integers(-128, 128, (3, 1, 32, 32))
    y, r = s.conv_fwd(op, x_q)
    want, _, _ = cpu.conv_fwd(x_q, arrays["conv1.wgt"], 1, 1)
    assert np.array_equal(y, want) and dev.engine.calls == 1


def test_pynq_overlays_that_do_not_fit_are_refused(standin, tmp_path):
    pynq, helper = standin
    from host.engine.driver import PynqOverlay, pynq_driver
    pynq_driver()
    moved = tmp_path / "moved"
    moved.mkdir()
    ol = pynq.Overlay(helper.write_overlay(moved, moved="shift"), download=False, device=helper.make_device())
    with pytest.raises(EngineError, match=r"register 'shift' is at 0x068 in the .hwh .* but at 0x060 in this e2t's"):
        PynqOverlay(ol)
    helper.reset_pynq()
    empty = tmp_path / "empty"
    empty.mkdir()
    ol = pynq.Overlay(helper.write_overlay(empty, with_engine=False), download=False, device=helper.make_device())
    with pytest.raises(EngineError, match=r"the overlay has no e2t engine IP \(e2t:hls:e2t_engine:1.0\); its IPs: "
                                          r"processing_system7_0"):
        PynqOverlay(ol)


def test_a_hanging_board_engine_times_out(standin, small, tmp_path):
    pynq, helper = standin
    from host.engine.driver import PynqOverlay
    ol = PynqOverlay(pynq.Overlay(helper.write_overlay(tmp_path), download=False, device=helper.make_device(hang=True)))
    s = EngineSession(*small, ol)
    s.ip.timeout_s = 0.2
    with pytest.raises(EngineTimeout, match="CONV_FWD of layer conv1: no ap_done"):
        s.conv_fwd(small[0].convs()[0], np.zeros((1, 1, 32, 32), np.int64))


# -- against the reference trainer ----------------------------------------------------------------

@pytest.mark.parametrize("savings", [
    {"smd": 0.3},
    {"smd": 0.3, "slu_target": 0.6, "slu_beta": 1e-3, "slu_gate_init": 0.9, "slu_band": 0.05, "slu_exec": "gather"},
], ids=["smd+psg", "smd+slu+psg"])
def test_the_engine_trainer_reproduces_the_reference_step_for_step(tmp_path, savings):
    """Same initial weights (the reference's, exported to a plan), data order, SMD draws and SLU
    gate draws: after an epoch of 44 iterations with 20+ kept steps (PSG in the engine, SMD and
    SLU on the host: gated blocks on the gathered images, the reference with --slu-exec gather),
    every integer master weight and momentum equals the reference's, and so does every float of
    the host's parameters (the gates' LSTM and output layer too); the training loss agrees
    within 1e-6 relative."""
    cfg = TrainConfig(model="resnet8", dataset="digits", epochs=1, batch_size=32, lr=0.05, precision="fixed",
                      psg=True, **savings)
    ref = _reference_exported(cfg, tmp_path)
    a = ref.fit()[-1]
    b = _engine_from_it(cfg, tmp_path).fit()[-1]
    assert a["kept_iterations"] == b["kept_iterations"] >= 20 and a["dropped_iterations"] == b["dropped_iterations"]
    assert abs(a["train_loss"] - b["train_loss"]) <= 1e-6 * abs(a["train_loss"])
    state = _load(tmp_path / "emu")
    _assert_the_reference_s_weights(ref, state)
    assert sum(f"host/{n}" in state for n in ref.model.state_dict()) >= 4 * 9 + 2 + (6 if "slu_target" in savings else 0)
    if "slu_target" in savings:  # the gates skipped some blocks: the gathered path ran
        assert 0.5 < a["executed_fraction"] == b["executed_fraction"] < 1


@pytest.mark.parametrize("what", [
    {"train_from": "blocks.2", "slu_target": 0.6, "slu_beta": 1e-3, "slu_gate_init": 0.9, "slu_exec": "gather"},
    {"train": "bn", "train_from": "blocks.1", "smd": 0.2},
], ids=["slu+blocks.2", "bn+blocks.1"])
def test_frozen_layers_train_step_for_step_as_in_the_reference(tmp_path, what):
    """--train-from and --train on both trainers, 4 iterations of 16 images: every integer master weight and
    momentum and every host float equals the reference's, the frozen ones as they started (SLU:
    the gate below the line decides without gradient on both); both count the same work for the
    same calls: per conv the same phases and modeled engine cycles, the same host work."""
    cfg = TrainConfig(model="resnet8", dataset="digits", epochs=1, batch_size=16, lr=0.05, precision="fixed",
                      psg=True, **what)
    ref = _reference_exported(cfg, tmp_path)
    emu = _engine_from_it(cfg, tmp_path)
    start = _engine_state(emu)
    ref.iters_per_epoch = emu.iters_per_epoch = 4
    a, b = ref.train_epoch(), emu.train_epoch()
    assert a["kept_iterations"] == b["kept_iterations"] >= 2
    assert abs(a["train_loss"] - b["train_loss"]) <= 1e-6 * abs(a["train_loss"])
    state = _engine_state(emu)
    _assert_the_reference_s_weights(ref, state)
    frozen = [f"ddr/{op['name']}.{a}" for op in emu.plan.convs() if not emu.trainable.trains(op) for a in ("master", "mom")]
    frozen += [f"host/{n}" for n in emu.params if n.endswith(("weight", "bias")) and n not in emu.trainable.params]
    assert len(frozen) >= 8 and all(np.array_equal(start[k], state[k]) for k in frozen)
    assert not all(np.array_equal(start[k], state[k]) for k in state if k not in frozen)
    cycles = [{name: {ph: slot.get("cycles", 0) for ph, slot in per.items()} for name, per in r["ops"]["per_layer"].items()
               if name in emu.plan.params and any(ph != "fwd" for ph in per)} for r in (a, b)]
    assert cycles[0] == cycles[1] and a["ops"]["host"] == b["ops"]["host"]


def _reference_exported(cfg, tmp_path):
    """The reference trainer of ``cfg`` in tmp_path/ref, its initial weights exported as a plan to tmp_path/init."""
    from reference import export as rx
    from reference.train import Trainer
    ref = Trainer(cfg, str(tmp_path / "ref"), **QUIET)
    ref._checkpoint()
    rx.export_checkpoint(str(tmp_path / "ref"), "pynq-z2", str(tmp_path / "init"), cfg.batch_size, None, lambda m: None)
    return ref


def _engine_from_it(cfg, tmp_path):
    """The engine trainer of ``cfg`` started from tmp_path/init, in tmp_path/emu."""
    import dataclasses
    return EngineTrainer(dataclasses.replace(cfg, backend="emu", init=str(tmp_path / "init")), str(tmp_path / "emu"),
                         **QUIET)


def _engine_state(t) -> dict:
    """An engine trainer's arrays as its checkpoint names them."""
    return {**{f"ddr/{k}": v for k, v in t.session.arrays().items()}, **{f"host/{k}": v.copy() for k, v in t.params.items()}}


def _assert_the_reference_s_weights(ref, state: dict) -> None:
    """Every PSG conv's integer master and momentum in ``state`` (an engine checkpoint's arrays) is
    the reference's, and every BatchNorm, classifier and gate float it holds."""
    psg_layers = [n for n, m in ref.model.named_modules() if hasattr(m, "w_master")]
    for name, buf in zip(psg_layers, ref.psg.state_dict()["buffers"]):
        m = ref.model.get_submodule(name)
        assert np.array_equal(state[f"ddr/{name}.master"], m.w_master.numpy()), name
        assert np.array_equal(state[f"ddr/{name}.mom"], buf.numpy()), name
    for name, value in ref.model.state_dict().items():
        if name.endswith(("weight", "bias", "running_mean", "running_var")) and f"host/{name}" in state:
            assert np.array_equal(state[f"host/{name}"], value.numpy()), name


# -- the user's own images ------------------------------------------------------------------------

def _write_folder(root, sizes=((12, 12),), n=6, mode="L"):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            a = rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
            Image.fromarray(a, mode).save(root / c / f"{i}.png")


def test_folder_dataset_trains_on_the_engine_from_an_exported_init(tmp_path):
    """--dataset folder (PNG subfolders, resized by --size) and --init from a plan: fine-tuning."""
    from host.data.datasets import load_dataset
    _write_folder(tmp_path / "imgs", sizes=((12, 12), (10, 14)), n=10)
    with pytest.raises(E2TError, match=r"images differ in size \(12 x 12 in .*0.png, 10 x 14 in .*1.png\): pass --size"):
        load_dataset("folder", str(tmp_path / "imgs"))
    ds = load_dataset("folder", str(tmp_path / "imgs"), size=16, channels=3)
    assert ds.train_x.shape[1:] == (3, 16, 16) and ds.num_classes == 3 and len(ds.test_y) == 6
    plan, weights, _ = planbuild.from_model("resnet8", 3, 3, 16, "pynq-z2", 8, seed=5)
    planbuild.save(str(tmp_path / "init"), plan, weights)
    cfg = _cfg(dataset="folder", image_size=16, image_channels=3, epochs=1, batch_size=8, psg=True,
               init=str(tmp_path / "init"))
    r = EngineTrainer(cfg, str(tmp_path / "run"), data_dir=str(tmp_path / "imgs"), **QUIET).fit()
    assert r[-1]["kept_iterations"] == 3 and 0 <= r[-1]["test_acc"] <= 1


def test_folder_and_npz_datasets_fail_clearly(tmp_path):
    from host.data.datasets import load_dataset
    _write_folder(tmp_path / "a")
    (tmp_path / "a" / "empty").mkdir()
    with pytest.raises(E2TError, match=r"class 'empty' has no images"):
        load_dataset("folder", str(tmp_path / "a"))
    _write_folder(tmp_path / "b")
    (tmp_path / "b" / "dog" / "9.png").write_bytes(b"not a png")
    with pytest.raises(E2TError, match=r"9.png: cannot read the image"):
        load_dataset("folder", str(tmp_path / "b"))
    with pytest.raises(E2TError, match="needs --data-dir"):
        load_dataset("folder", None)
    x = np.random.default_rng(0).integers(0, 256, (40, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    ds = load_dataset("folder", str(tmp_path / "d.npz"), channels=1)
    assert ds.train_x.shape[1:] == (1, 20, 20) and ds.num_classes == 4
    np.savez(tmp_path / "e.npz", images=x)
    with pytest.raises(E2TError, match="needs arrays 'x' \\(images\\) and 'y' \\(labels\\); it has images"):
        load_dataset("folder", str(tmp_path / "e.npz"))
