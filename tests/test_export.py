"""e2t export (workstation): checkpoints of every model -> ONNX -> plan + weights.bin + HLS project,
bit for bit against the reference's fixed-point forward through the engine's fast build, back
out to PyTorch and ONNX, and bad input refused with one line."""
import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from contract import numerics as nx
from contract.errors import E2TError
from e2t.cli import main
from host.data.datasets import load_dataset, normalize, preprocess
from host.plan import planbuild, schema as pm, weightsfile
from host.train.config import MODELS, TrainConfig
from host.train.forward import forward

from hls import csim
from reference import export as rx, from_plan
from reference.quant import QConv2d, quantize_tensor, weights_for_use_from_float
from reference.train import Trainer, decode_checkpoint

QUIET = dict(progress=False, log=lambda m: None)


def _checkpoint(folder, cfg: TrainConfig, seed_stats: int = 0, train: bool = False) -> str:
    """A run folder with a checkpoint: trained for cfg.epochs, or freshly initialised with BN
    statistics and PSG momentum made non-trivial (so every number of the export is exercised)."""
    t = Trainer(cfg, str(folder), **QUIET)
    if train:
        t.fit()
        return str(folder)
    g = torch.Generator().manual_seed(seed_stats)
    with torch.no_grad():
        for m in t.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    for m in t.psg.layers:
        t.psg.buffers[id(m)] = torch.randint(-2 ** 24, 2 ** 24, m.w_master.shape, generator=g)
    t._checkpoint()
    return str(folder)


def _export(src, out, board="pynq-z2", batch=None):
    return rx.export_checkpoint(src, board, str(out), batch, None, lambda m: None)


def _ints(folder):
    plan = pm.load(str(folder))
    return plan, weightsfile.read(str(folder), plan)


def _reference(src):
    state, cfg, _ = rx.read_checkpoint(src)
    ds = load_dataset(cfg.dataset)
    trained, twin = rx.trained_models(state, cfg, ds.in_channels, ds.num_classes)
    return state, cfg, trained, ds


def _same_structure(plan, model, slu):
    ops, tensors = planbuild.resnet_ops(model, plan.network["in_channels"], plan.network["num_classes"],
                                        plan.network["height"], slu)
    strip = lambda o: {k: v for k, v in o.items() if k not in ("w_exp", "wq_exp", "buffers")}  # noqa: E731
    assert [strip(o) for o in plan.ops] == [strip(o) for o in ops]
    assert plan.tensors == tensors


# -- every model, fp32 and fixed, with and without gates ---------------------------------------

CASES = [(m, "fp32", False, False) for m in MODELS] + [(m, "fixed", False, True) for m in MODELS] + \
        [("resnet8", "fixed", True, False), ("resnet8", "fixed", True, True), ("resnet20", "fixed", False, False)]


@pytest.mark.parametrize("model, precision, psg, slu", CASES)
def test_export_every_model(tmp_path, model, precision, psg, slu):
    cfg = TrainConfig(model=model, dataset="digits", epochs=1, batch_size=32, precision=precision, psg=psg,
                      slu_target=0.7 if slu else None)
    src = _checkpoint(tmp_path / "run", cfg)
    out = tmp_path / "export"
    summary = _export(src, out)
    for name in ("plan.json", "weights.bin", "model.onnx", "engine_config.h", "steps.json", "summary.txt",
                 "hls/Makefile", "hls/config/engine_config.h", "hls/src/e2t_engine.cpp", "hls/run_hls.tcl"):
        assert (out / name).is_file(), name
    plan, arrays = _ints(out)
    _same_structure(plan, model, slu)
    assert summary["convs"] == len(plan.convs()) and summary["cycles_per_step"] > 0
    check = plan.data["provenance"]["onnx_check"]
    assert check["images"] == 256 and check["max_abs_error"] <= check["tolerance"]
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == ["graph", "tidy", "map", "formats", "layout", "board"]
    assert all(s["seconds"] >= 0 for s in steps)
    # the round trip gives back the reference's integers exactly
    state, cfg, trained, _ = _reference(src)
    for name, m in trained.named_modules():
        if not isinstance(m, (QConv2d, torch.nn.Conv2d)):
            continue
        op = next(o for o in plan.convs() if o["name"] == name)
        if psg:
            assert np.array_equal(arrays[f"{name}.master"], m.w_master.numpy()) and op["w_exp"] == m.w_exp
            buf = state["psg"]["buffers"][[n for n, q in trained.named_modules() if isinstance(q, QConv2d)].index(name)]
            assert np.array_equal(arrays[f"{name}.mom"], buf.numpy())
            wq, s = nx.weights_for_use(m.w_master.numpy())
            exps = m.w_exp + s
        else:
            wq, exps = weights_for_use_from_float(m.weight)
            wq, exps = wq.numpy(), exps.numpy()
            master, e_w = nx.master_from_float(m.weight.detach().numpy())
            assert np.array_equal(arrays[f"{name}.master"], master) and op["w_exp"] == e_w
        assert np.array_equal(arrays[f"{name}.wgt"], wq), name
        assert np.array_equal(op["wq_exp"] + arrays[f"{name}.wshift"].astype(np.int64), exps), name
    bn = trained.get_submodule("bn1")
    assert np.array_equal(arrays["bn1.running_var"], bn.running_var.numpy())


def test_onnx_against_pytorch_error_is_within_the_stated_tolerance(tmp_path):
    import onnxruntime as ort
    cfg = TrainConfig(model="resnet20", dataset="digits", precision="fixed", psg=True, slu_target=0.5)
    src = _checkpoint(tmp_path / "run", cfg, seed_stats=3)
    state, cfg, trained, ds = _reference(src)
    twin = rx.trained_models(state, cfg, 1, 10)[1]
    data = rx.to_onnx(twin, trained, 1, 32)
    x = normalize(ds, ds.test_x)
    err, tol = rx.onnx_error(data, twin, x)
    want = np.abs(ort.InferenceSession(data).run(None, {"images": x})[0]).max()
    assert err <= tol and np.isclose(tol, rx.RTOL * max(1.0, float(want)), rtol=1e-3)
    model = onnx.load_from_string(data)
    assert model.opset_import[0].version == rx.OPSET
    names = {t.name for t in model.graph.initializer}
    assert "net.blocks.4.conv2.weight.mantissa" in names and "net.blocks.4.conv2.weight" not in names


# -- bit for bit against the reference's fixed-point forward ------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two short real runs on the digits (fixed point; one with SLU gates), exported."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for slu in (False, True):
        cfg = TrainConfig(model="resnet8", dataset="digits", epochs=2, batch_size=32, precision="fixed",
                          slu_target=0.6 if slu else None, slu_beta=1e-3 if slu else 1e-5)
        src = _checkpoint(root / f"run{slu:d}", cfg, train=True)
        out = root / f"export{slu:d}"
        _export(src, out, batch=100)
        runs[slu] = (src, out)
    return runs


def _reference_convs(trained_model, x, gated):
    """Every QConv2d's int32 output in the reference's fixed forward, and the logits."""
    rec = {}

    def hook(m, inp, out, name):
        x_q, _, _ = quantize_tensor(inp[0], nx.ACT)
        w_q, _ = weights_for_use_from_float(m.weight)
        rec[name] = nx.conv_fwd(x_q.numpy(), w_q.numpy(), m.stride[0], m.padding[0])[0]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n))
             for n, m in trained_model.named_modules() if isinstance(m, QConv2d)]
    try:
        with torch.no_grad():
            logits = trained_model(torch.from_numpy(x), gates="deterministic") if gated else trained_model(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    return rec, logits.numpy()


@pytest.mark.parametrize("slu", [False, True])
def test_plan_forward_on_the_engine_equals_the_reference_bit_for_bit(trained, slu):
    src, out = trained[slu]
    state, cfg, model, ds = _reference(src)
    plan, arrays = _ints(out)
    x = normalize(ds, ds.test_x[:100])
    ref, logits = _reference_convs(model, x, slu)
    got = {}
    t = forward(plan, arrays, x, csim.Engine("fast", log=lambda m: None), slu="mask", record=got)
    assert set(got) == set(ref) == {o["name"] for o in plan.convs()}
    for name in ref:
        assert got[name].dtype == np.int32 and np.array_equal(got[name], ref[name]), name
    assert np.abs(t["fc"] - logits).max() <= 1e-4 * max(1.0, np.abs(logits).max())
    assert (t["fc"].argmax(1) == logits.argmax(1)).all()
    if slu:
        assert np.array_equal(t["gates"], model.last_gates[1:].numpy())


def test_gathered_gated_blocks_keep_every_decision(trained):
    """SLU as the engine runs it (the block on its sub-batch only) keeps the gates' decisions
    and the block outputs of images whose gate is off."""
    src, out = trained[True]
    plan, arrays = _ints(out)
    ds = load_dataset("digits")
    x = normalize(ds, ds.test_x[:100])
    eng = csim.Engine("fast", log=lambda m: None)
    a, b = forward(plan, arrays, x, eng, slu="gather"), forward(plan, arrays, x, eng, slu="mask")
    assert np.array_equal(a["gates"][0], b["gates"][0])
    first_mix = next(o for o in plan.ops if o["type"] == "mix")
    off = b["gates"][0] == 0
    assert np.array_equal(a[first_mix["output"]][off], b[first_mix["output"]][off])


@pytest.mark.parametrize("slu", [False, True])
def test_back_export_gives_pytorch_and_onnx_that_agree_with_the_host(trained, tmp_path, slu):
    src, out = trained[slu]
    figures = from_plan.export_plan(str(out), str(tmp_path / "back"), None, lambda m: None)
    assert figures["images"] == 359 and figures["onnx_acc"] == figures["host_acc"]
    pre = preprocess(load_dataset("digits"))  # stated by the plan, both model.onnx files and eval.json
    assert pm.load(str(out)).network["preprocess"] == figures["preprocess"] == pre
    assert _onnx_preprocess(out / "model.onnx") == _onnx_preprocess(tmp_path / "back" / "model.onnx") == pre
    assert figures["differing_predictions"] == 0 and figures["host_acc"] > (0.11 if slu else 0.2)  # a few steps: above chance
    with open(tmp_path / "back" / "checkpoint.pt", "rb") as f:
        state = decode_checkpoint(f.read(), "checkpoint.pt")
    cfg = TrainConfig.from_dict(state["config"])
    assert cfg.psg and cfg.precision == "fixed" and cfg.slu_target == (0.6 if slu else None)
    # checkpoint -> plan again: the same integer masters and momentum
    again = tmp_path / "again"
    shutil.copy(tmp_path / "back" / "checkpoint.pt", tmp_path / "checkpoint.pt")
    _export(str(tmp_path / "checkpoint.pt"), again, batch=100)
    p1, a1 = _ints(out)
    p2, a2 = _ints(again)
    for op in p1.convs():
        for key in ("master", "mom"):
            assert np.array_equal(a1[f"{op['name']}.{key}"], a2[f"{op['name']}.{key}"])
    for name in ("bn1.weight", "blocks.1.bn2.running_mean", "fc.bias") + (("gate.lstm.weight_ih_l0",) if slu else ()):
        assert np.array_equal(a1[name], a2[name])


def _onnx_preprocess(path) -> dict:
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(meta["e2t.preprocess"])


def test_a_board_plan_exports_to_pytorch_and_onnx(tmp_path, capsys):
    assert main(["plan", "--model", "resnet8", "--dataset", "digits", "--batch", "64", "--slu",
                 "--out", str(tmp_path / "p")]) == 0
    assert main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    figures = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert figures["onnx_acc"] == figures["host_acc"] and figures["differing_predictions"] == 0
    assert figures["preprocess"] == _onnx_preprocess(tmp_path / "b" / "model.onnx") == \
        preprocess(load_dataset("digits"))  # a fresh plan states none: its data set's
    assert (tmp_path / "b" / "checkpoint.pt").is_file()


# -- the HLS project folder ----------------------------------------------------------------------

def test_exported_hls_project_builds_and_passes_its_testbench_with_gxx(trained):
    if shutil.which(csim.CXX) is None:
        pytest.skip(f"{csim.CXX} is not installed")
    _, out = trained[False]
    cfg = (out / "hls" / "config" / "engine_config.h").read_text()
    assert '#define E2T_BOARD "pynq-z2"' in cfg and "#define E2T_MAX_BATCH 100" in cfg
    assert (out / "engine_config.h").read_text() == cfg
    r = subprocess.run(["make", "-C", str(out / "hls"), "csim-gcc", f"AP_TYPES={csim.ap_types_dir()}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("0 mismatches: PASS") == 2, r.stdout[-2000:]  # native and ap_int builds


# -- bad input: one line, exit 2, nothing written --------------------------------------------------

def _tiny_onnx(path, op="Relu", channels=16, conv=None, opset=17, weight=None, meta=None):
    """images -> Conv (channels; attributes ``conv``, weights through ``weight``) -> op ->
    GlobalAveragePool -> Flatten -> Gemm, at ``opset``, with ``meta`` in its metadata_props."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
    w = numpy_helper.from_array(w if weight is None else weight(w), "net.c.weight")
    fw = numpy_helper.from_array(rng.standard_normal((10, channels)).astype(np.float32), "net.fc.weight")
    fb = numpy_helper.from_array(np.zeros(10, np.float32), "net.fc.bias")
    extra = {"kernel_shape": [2, 2]} if op == "MaxPool" else {}
    conv = {"kernel_shape": [3, 3], "pads": [1] * 4} if conv is None else conv
    nodes = [helper.make_node("Conv", ["images", "net.c.weight"], ["a"], name="big", **conv),
             helper.make_node(op, ["a"], ["b"], name="pool1", **extra),
             helper.make_node("GlobalAveragePool", ["b"], ["c"]), helper.make_node("Flatten", ["c"], ["d"]),
             helper.make_node("Gemm", ["d", "net.fc.weight", "net.fc.bias"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, fw, fb])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    helper.set_model_props(model, meta or {})
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "plan"
    planbuild.save(str(out), *planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 16, dataset="digits")[:2])
    return out


def _corrupt(plan_dir, tmp_path, how):
    bad = tmp_path / "bad"
    shutil.copytree(plan_dir, bad)
    w = bad / "weights.bin"
    data = bytearray(w.read_bytes())
    if how == "truncate":
        data = data[:-100]
    elif how == "flip":
        data[1000] ^= 0x10
    else:
        d = json.loads((bad / "plan.json").read_text())
        d["version"] = 7
        (bad / "plan.json").write_text(json.dumps(d))
    w.write_bytes(bytes(data))
    return str(bad)


def _file(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


BAD = [
    ("not onnx", lambda t, p: _file(t / "x.onnx", b"hello"), [],
     r"x.onnx: not an ONNX model"),
    ("unsupported op", lambda t, p: _tiny_onnx(t / "pool.onnx", "MaxPool"), [],
     r"node 'pool1' \(MaxPool\): the engine and the host have no such op"),
    ("past the maxima", lambda t, p: _tiny_onnx(t / "wide.onnx", channels=128), [],
     r"node 'big' \(Conv\): conv c: c_out 128 exceeds pynq-z2's max_c 64"),
    ("footprint", lambda t, p: _checkpoint(t / "run", TrainConfig(model="resnet110", dataset="digits")),
     ["--batch", "256"], r"the DDR footprint at batch 256, \d+\.\d MiB, exceeds the 128 MiB pynq-z2 gives"),
    ("truncated weights", lambda t, p: _corrupt(p, t, "truncate"), [], r"weights.bin: \d+ bytes, the plan says"),
    ("corrupted weights", lambda t, p: _corrupt(p, t, "flip"), [], r"weights.bin: '[\w.]+' fails its CRC-32 check"),
    ("schema version", lambda t, p: _corrupt(p, t, "version"), [],
     r"plan.json: version: plan schema version 7 is not supported: this e2t reads version 1"),
    ("not a checkpoint", lambda t, p: _file(t / "c.pt", b"garbage"), [],
     r"checkpoint .*c.pt is corrupt or truncated"),
    ("unknown board", lambda t, p: _tiny_onnx(t / "ok.onnx"), ["--board", "vc707"], r"unknown board 'vc707'"),
    ("auto_pad asymmetric", lambda t, p: _tiny_onnx(t / "a.onnx", conv={"kernel_shape": [3, 3], "strides": [2, 2],
                                                                       "auto_pad": "SAME_UPPER"}), [],
     r"node 'big' \(Conv\): kernel \[3, 3\], strides \[2, 2\], pads \[0, 0, 1, 1\] \(from auto_pad SAME_UPPER\)"),
    ("dilations", lambda t, p: _tiny_onnx(t / "d.onnx", conv={"kernel_shape": [3, 3], "dilations": [2, 2]}), [],
     r"node 'big' \(Conv\): attribute dilations=\[2, 2\] is not supported \(only \[1, 1\]\)"),
    ("opset 99", lambda t, p: _tiny_onnx(t / "o.onnx", opset=99), [],
     r"o.onnx: opset 99: this importer was checked with opsets 13..21 of the default domain"),
    ("infinite weight", lambda t, p: _tiny_onnx(t / "i.onnx", weight=lambda w: w + np.float32(np.inf)), [],
     r"initializer 'net.c.weight' holds an infinite value"),
    ("NaN weight", lambda t, p: _tiny_onnx(t / "n.onnx", weight=lambda w: w * np.nan), [],
     r"initializer 'net.c.weight' holds NaN"),
    ("fp16 weight", lambda t, p: _tiny_onnx(t / "h.onnx", weight=lambda w: w.astype(np.float16)), [],
     r"initializer 'net.c.weight' is float16: the plan computes in float32"),
    ("int32 weight", lambda t, p: _tiny_onnx(t / "w.onnx", weight=lambda w: w.astype(np.int32)), [],
     r"node 'big' \(Conv\): input 1 \('net.c.weight'\) is int32, not float32"),
    ("kernel unlike its weight", lambda t, p: _tiny_onnx(t / "k.onnx", conv={"kernel_shape": [5, 5], "pads": [2] * 4}),
     [], r"weight 'net.c.weight' of shape \[16, 1, 3, 3\] does not fit a 5 x 5 kernel on 1 input channels"),
    ("preprocess not JSON", lambda t, p: _tiny_onnx(t / "m.onnx", meta={"e2t.preprocess": "{"}), [],
     r"metadata_props 'e2t.preprocess' is not JSON"),
    ("preprocess of 3 channels", lambda t, p: _tiny_onnx(t / "m.onnx", meta={"e2t.preprocess": json.dumps(dict(
        preprocess(load_dataset("digits")), mean=[0, 0, 0]))}), [],
     r"m.onnx \(the plan made from it\): network.preprocess.mean: \[0, 0, 0\] is not a list of 1 numbers"),
    ("batch 0", lambda t, p: _tiny_onnx(t / "ok.onnx"), ["--batch", "0"],
     r"--batch 0: choose 1..256 \(the max_batch of --board pynq-z2\)"),
    ("batch past the board", lambda t, p: _tiny_onnx(t / "ok.onnx"), ["--batch", "257"], r"--batch 257: choose 1..256"),
    ("batch of a plan", lambda t, p: str(p), ["--batch", "8"],
     r"--batch 8: a plan is exported back with the batch it was made for"),
    ("run batch past the board", lambda t, p: _checkpoint(t / "run", TrainConfig(model="resnet8", dataset="digits",
                                                                                batch_size=300)), [],
     r"the run's batch size 300 exceeds pynq-z2's max_batch 256: give --batch 1..256"),
]


@pytest.mark.parametrize("what, make, flags, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, plan_dir, what, make, flags, message):
    import re
    src = make(tmp_path, plan_dir)
    out = tmp_path / "out"
    assert main(["export", src, "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("e2t: error: "), err
    assert re.search(message, err), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_good_onnx_file_exports(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", _tiny_onnx(tmp_path / "ok.onnx"), "--out", str(out), "--quiet"]) == 0
    plan = pm.load(str(out))
    assert [o["type"] for o in plan.ops] == ["conv", "relu", "avgpool", "linear", "loss"]
    assert plan.network["model"] == "onnx-1conv"


def _exported(src, out, *flags):
    """plan.json's object without its provenance, and weights.bin, of ``e2t export src``."""
    assert main(["export", src, "--out", str(out), "--quiet", *flags]) == 0
    data = pm.load(str(out)).data
    return {k: v for k, v in data.items() if k != "provenance"}, (out / "weights.bin").read_bytes()


@pytest.mark.parametrize("auto_pad, strides, pads", [("SAME_UPPER", [1, 1], [1] * 4), ("SAME_LOWER", [1, 1], [1] * 4),
                                                     ("VALID", [2, 2], [0] * 4)])
def test_conv_auto_pad_is_the_pads_it_implies(tmp_path, capsys, auto_pad, strides, pads):
    explicit = _tiny_onnx(tmp_path / "e.onnx", conv={"kernel_shape": [3, 3], "strides": strides, "pads": pads})
    auto = _tiny_onnx(tmp_path / "a.onnx", conv={"kernel_shape": [3, 3], "strides": strides, "auto_pad": auto_pad})
    plan, weights = _exported(auto, tmp_path / "a")
    assert (plan, weights) == _exported(explicit, tmp_path / "e")
    inferred = onnx.shape_inference.infer_shapes(onnx.load(auto)).graph.value_info
    dims = next(v for v in inferred if v.name == "a").type.tensor_type.shape.dim
    assert plan["tensors"]["c"] == [d.dim_value for d in dims[1:]]  # the maps ONNX computes: 32 x 32, 15 x 15


def test_an_onnx_file_s_preprocessing_goes_into_the_plan_and_back_out(tmp_path, capsys):
    pre = preprocess(load_dataset("digits"))
    src = _tiny_onnx(tmp_path / "m.onnx", meta={"e2t.preprocess": json.dumps(pre)})
    plan, _ = _exported(src, tmp_path / "p")
    assert plan["network"]["preprocess"] == pre
    assert main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert _onnx_preprocess(tmp_path / "b" / "model.onnx") == pre
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["preprocess"] == pre


def test_every_opset_the_importer_names_gives_the_same_plan(tmp_path):
    """The torch export (opset 17) converted to each opset of hls/export.py's OPSETS gives the same
    plan; below BatchNormalization-15 onnx has no converter, and the same graph is valid as it is
    (at 13 without training_mode). Outside them, and with an LSTM attribute the gate does not
    compute, the importer refuses."""
    import copy
    from onnx import version_converter
    from hls import export as hx
    cfg = TrainConfig(model="resnet8", dataset="digits", precision="fixed", psg=True, slu_target=0.5)
    state, cfg, trained, _ = _reference(_checkpoint(tmp_path / "run", cfg))
    model = onnx.load_from_string(rx.to_onnx(rx.trained_models(state, cfg, 1, 10)[1], trained, 1, 32))

    def plan(m):
        return hx.export(m.SerializeToString(), "pynq-z2", 16).ctx["plan"].data

    want = plan(model)
    for v in hx.OPSETS:
        if v >= 15:
            m = version_converter.convert_version(model, v)
        else:
            m = copy.deepcopy(model)
            m.opset_import[0].version = v
            for n in m.graph.node:
                if n.op_type == "BatchNormalization" and v < 14:
                    n.attribute.remove(next(a for a in n.attribute if a.name == "training_mode"))
        assert plan(m) == want, v
    for v in (hx.OPSETS[0] - 1, hx.OPSETS[-1] + 1):
        m = copy.deepcopy(model)
        m.opset_import[0].version = v
        with pytest.raises(E2TError, match=f"opset {v}: this importer was checked with opsets 13..21"):
            plan(m)
    next(n for n in model.graph.node if n.op_type == "LSTM").attribute.append(helper.make_attribute("clip", 1.0))
    with pytest.raises(E2TError, match=r"\(LSTM\): attribute clip=1.0 is not supported"):
        plan(model)
