"""The network plan on the board side (numpy only): building one from a model name, its checks
with named fields, the DDR layout, weights.bin and its checksums, the board data, and the
host's float ops that must round as PyTorch's do."""
import copy
import json
import os
from fractions import Fraction

import numpy as np
import pytest

from test_board_side import run_without_torch

from contract import boards, numerics as nx
from contract.errors import E2TError
from e2t.cli import main
from host.plan import planbuild, schema as pm, weightsfile
from host.train import hostops
from host.train.config import MODELS
from host.train.forward import NumpyEngine, forward


@pytest.fixture(scope="module")
def r20():
    return planbuild.from_model("resnet20", 1, 10, 32, "pynq-z2", 128, seed=1, slu=True, gate_init=0.6,
                                dataset="mnist5k")


def check(data):
    return pm.Plan(copy.deepcopy(data))


# -- building ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("slu", [False, True])
def test_every_model_builds_a_valid_plan(model, slu):
    plan, weights, arrays = planbuild.from_model(model, 3, 10, 32, "zcu104", 64, slu=slu)
    depth = int(model[6:])
    n = (depth - 2) // 6
    convs = plan.convs()
    assert len(convs) == depth - 1 + 2 + (3 * n - 1 if slu else 0)  # 1 + 2 per block + 2 projections + gates
    assert sum(op["type"] == "gate" for op in plan.ops) == (3 * n - 1 if slu else 0)
    assert plan.data["weights"]["bytes"] == len(weights)
    assert pm.Plan(json.loads(plan.to_json())).data == plan.data  # JSON round trip, checks pass again


def test_fresh_weights_are_the_contract_s_integers(r20):
    plan, _, arrays = r20
    for op in plan.convs():
        name = op["name"]
        master = arrays[f"{name}.master"].astype(np.int64)
        assert int(np.abs(master).max()) < 1 << (nx.MASTER_INIT_BITS - 1)
        wq, s = nx.weights_for_use(master)
        assert np.array_equal(arrays[f"{name}.wgt"], wq) and np.array_equal(arrays[f"{name}.wshift"], s)
        assert op["wq_exp"] == op["w_exp"] and not arrays[f"{name}.mom"].any()
        assert arrays[f"{name}.wgt"].dtype == np.int8 and arrays[f"{name}.master"].dtype == np.int32
        assert op["input_grad"] == (op["role"] != "stem")


def test_he_init_scale_and_gate_bias(r20):
    plan, _, arrays = r20
    op = next(o for o in plan.convs() if o["name"] == "blocks.8.conv2")
    w = arrays[f"{op['name']}.master"] * 2.0 ** op["w_exp"]
    assert abs(w.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.05
    assert np.allclose(arrays["gate.proj.bias"], np.log(0.6 / 0.4))


def test_seed_decides_the_weights():
    a = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32, seed=3)[1]
    b = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32, seed=3)[1]
    c = planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", 32, seed=4)[1]
    assert a == b and a != c


# -- DDR layout and weights.bin -----------------------------------------------------------------

def test_ddr_layout_is_aligned_disjoint_and_starts_with_weights_bin(r20):
    plan, weights, arrays = r20
    align = plan.board.ddr_align
    spans = sorted((b["offset"], b["offset"] + b["bytes"]) for b in plan.data["ddr"]["buffers"])
    assert all(o % align == 0 for o, _ in spans)
    assert all(a1 <= b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= plan.data["ddr"]["bytes"] <= plan.board.pl_ddr_bytes
    for b in plan.data["ddr"]["buffers"]:  # what DDR loads from weights.bin is byte for byte there
        if b["init"] == "weights.bin":
            raw = weights[b["offset"]:b["offset"] + b["bytes"]]
            assert raw == np.ascontiguousarray(arrays[b["name"]]).tobytes()
    act = plan.buffers["blocks.3.conv1.act"]
    assert act["shape"] == [128, 16, 32, 32] and act["dtype"] == "int8"
    out = plan.buffers["shared.out"]
    assert out["shape"] == [128 * 16 * 32 * 32]


def test_weights_file_round_trip(tmp_path, r20):
    plan, weights, arrays = r20
    planbuild.save(str(tmp_path), plan, weights)
    back = weightsfile.read(str(tmp_path), pm.load(str(tmp_path)))
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k]), k


def test_corrupted_and_truncated_weights_are_refused(r20):
    plan, weights, _ = r20
    with pytest.raises(E2TError, match="truncated"):
        weightsfile.unpack(weights[:-1], plan)
    entry = plan.params["blocks.2.conv2.master"]
    bad = bytearray(weights)
    bad[entry["offset"] + 5] ^= 1
    with pytest.raises(E2TError, match="'blocks.2.conv2.master' fails its CRC-32"):
        weightsfile.unpack(bytes(bad), plan)
    last = len(weights) - 1  # a byte in the padding after the last array: only the SHA-256 sees it
    gap = bytearray(weights)
    ends = {e["offset"] + e["bytes"] for e in plan.data["params"]}
    if last >= max(ends):
        gap[last] ^= 1
        with pytest.raises(E2TError, match="SHA-256"):
            weightsfile.unpack(bytes(gap), plan)


# -- checks with named fields -------------------------------------------------------------------

def _conv_index(plan, name):
    return next(i for i, op in enumerate(plan.ops) if op["name"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda d, i: d["ops"][i].update(stride=3), r"plan.json: ops\[{i}\].stride: 3 is not 1 or 2$"),
    (lambda d, i: d["ops"][i].update(k=5), r"ops\[{i}\].k: 5 exceeds the board's max_k 3 \(pynq-z2\)"),
    (lambda d, i: d["ops"][i].update(c_out=65), r"ops\[{i}\].c_out: 65 exceeds the board's max_c 64"),
    (lambda d, i: d["ops"][i].update(pad=2), r"ops\[{i}\].pad: 2 exceeds the board's max_pad 1"),
    (lambda d, i: d["ops"][i].update(ho=17), r"ops\[{i}\].ho: 17 exceeds 16"),
    (lambda d, i: d["ops"][i].update(w_exp=8), r"ops\[{i}\].w_exp: 8 exceeds 7"),
    (lambda d, i: d["ops"][i].pop("role"), r"ops\[{i}\].role: missing"),
    (lambda d, i: d["ops"][i].update(type="maxpool"), r"ops\[{i}\].type: 'maxpool' is not one of conv"),
    (lambda d, i: d["ops"][i].update(inputs=["nowhere"]), r"ops\[{i}\].inputs: tensor 'nowhere' is not in tensors"),
    (lambda d, i: d["ops"][i]["buffers"].update(act="shared.grad"), r"ops\[{i}\].buffers.act: 'shared.grad' is int16"),
    (lambda d, i: d.update(version=2), r"version: plan schema version 2 is not supported: this e2t reads version 1"),
    (lambda d, i: d.update(format="other"), r"format: 'other' is not 'e2t-plan'"),
    (lambda d, i: d.update(batch=257), r"batch: 257 exceeds the board's max_batch 256"),
    (lambda d, i: d.update(board="vc707"), r"unknown board 'vc707' \(known: kv260, pynq-z2, zcu104, zedboard\)"),
    (lambda d, i: d["ddr"].update(bytes=1 << 30), r"ddr.bytes: the DDR footprint 1024.0 MiB exceeds the 128 MiB"),
    (lambda d, i: d["ddr"]["buffers"][3].update(offset=8), r"ddr.buffers\[3\].offset: 8 is not a multiple of"),
    (lambda d, i: d["params"][0].update(bytes=7), r"params\[0\].bytes: 7 is not int8"),
])
def test_a_wrong_field_is_named(r20, edit, message):
    plan = r20[0]
    i = _conv_index(plan, "blocks.3.conv1")
    data = copy.deepcopy(plan.data)
    edit(data, i)
    with pytest.raises(E2TError, match=message.format(i=i)):
        pm.Plan(data)


def test_a_footprint_past_the_board_is_refused():
    with pytest.raises(E2TError, match=r"DDR footprint 159.6 MiB exceeds the 128 MiB pynq-z2 gives the engine"):
        planbuild.from_model("resnet110", 3, 10, 32, "pynq-z2", 128)
    planbuild.from_model("resnet110", 3, 10, 32, "zcu104", 128)  # 512 MiB there


def test_plan_json_that_is_not_json(tmp_path):
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(E2TError, match="cannot read it as a JSON plan"):
        pm.load(str(tmp_path))
    with pytest.raises(E2TError, match="no such plan"):
        pm.load(str(tmp_path / "missing"))


# -- boards ---------------------------------------------------------------------------------------

def test_every_board_file_is_valid_and_generates_the_engine_config():
    from hls.boards import config_header
    assert boards.names() == ["kv260", "pynq-z2", "zcu104", "zedboard"]
    for name in boards.names():
        b = boards.board(name)
        assert b.pl_ddr_bytes <= b.ddr_bytes and {"ddr_bytes", "pl_ddr_bytes", "dsp", "board_part", "rails"} <= set(b.sources)
        assert (b.family == "zynq7") == (b.ps == "processing_system7") and b.dsp >= b.tile_o * b.tile_i
        assert f"#define E2T_MAX_C {b.max_c}" in config_header(b)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(max_c=0), "max_c: 0 is not a positive integer"),
    (lambda d: d.pop("tile_o"), "missing field.s. tile_o"),
    (lambda d: d.update(colour="red"), "unknown field.s. colour"),
    (lambda d: d.update(ddr_align=48), "ddr_align: 48 is not a power of two"),
    (lambda d: d.update(name="other"), "name: 'other' differs from its folder"),
    (lambda d: d.update(dsp=0), "dsp: 0 is not a positive integer"),
    (lambda d: d.update(family="virtex"), "family: 'virtex' is not one of zynq7, zynqmp"),
    (lambda d: d.update(hp_ports=[]), "hp_ports: the engine needs at least one port"),
    (lambda d: d.update(rails="none"), "rails: 'none' is not a list of names"),
    (lambda d: d.update(board_part=""), "board_part: '' is not a name"),
])
def test_a_wrong_board_field_is_named(tmp_path, edit, message):
    with open(os.path.join(boards.DATA, "pynq-z2", "board.json")) as f:
        d = json.load(f)
    edit(d)
    (tmp_path / "pynq-z2").mkdir()
    path = tmp_path / "pynq-z2" / "board.json"
    path.write_text(json.dumps(d))
    with pytest.raises(E2TError, match=message):
        boards.load(str(path))


# -- the host's float ops -------------------------------------------------------------------------

def _exact_fma_ok(x, a, c, r) -> bool:
    """r is the float32 nearest to x*a + c (ties to even), by exact rational arithmetic."""
    exact = Fraction(float(x)) * Fraction(float(a)) + Fraction(float(c))
    r = np.float32(r)
    up, down = np.nextafter(r, np.float32(np.inf)), np.nextafter(r, np.float32(-np.inf))
    d = abs(Fraction(float(r)) - exact)
    for n in (up, down):
        dn = abs(Fraction(float(n)) - exact)
        if dn < d or (dn == d and int(np.float32(n).view(np.int32)) % 2 == 0 and int(r.view(np.int32)) % 2):
            return False
    return True


def test_fma32_rounds_once():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000).astype(np.float32) * np.float32(8)
    a = rng.standard_normal(3000).astype(np.float32)
    c = (rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 3, 3000)).astype(np.float32)
    r = hostops.fma32(x, a, c)
    assert all(_exact_fma_ok(*v) for v in zip(x, a, c, r))
    # products exactly halfway between two float32 values, nudged by an addend far below them:
    # rounding the float64 sum would tie to even; the fused result goes the way of the addend
    h = np.float32(1 + 2.0 ** -12)
    for sign in (1, -1):
        for tiny in (2.0 ** -80, -(2.0 ** -80)):
            xs, cs = np.float32(sign * h), np.float32(sign * tiny)
            got = hostops.fma32(xs, h, cs)
            assert _exact_fma_ok(xs, h, cs, got)
    assert hostops.fma32(h, h, np.float32(2.0 ** -80)) == np.float32(1 + 2.0 ** -11 + 2.0 ** -23)
    assert hostops.fma32(h, h, np.float32(-(2.0 ** -80))) == np.float32(1 + 2.0 ** -11)


def test_forward_runs_on_the_numpy_engine(r20):
    plan, _, arrays = r20
    x = np.random.default_rng(0).standard_normal((6, 1, 32, 32)).astype(np.float32)
    rec = {}
    t = forward(plan, arrays, x, NumpyEngine(), record=rec)
    assert t["fc"].shape == (6, 10) and np.isfinite(t["fc"]).all()
    assert t["gates"].shape == (8, 6) and set(np.unique(t["gates"])) <= {0.0, 1.0}
    assert len(rec) == len(plan.convs()) or t["gates"].min() == 0  # skipped blocks make no engine call
    with pytest.raises(E2TError, match=r"the plan takes \[N\] \+ \[1, 32, 32\] with 1 <= N <= 128"):
        forward(plan, arrays, np.zeros((129, 1, 32, 32), np.float32), NumpyEngine())


# -- the command line, on a board (no torch) --------------------------------------------------------

def test_e2t_plan_runs_without_torch(tmp_path):
    out = tmp_path / "plan"
    r = run_without_torch(f"from e2t.cli import main; sys.exit(main(['plan', '--model', 'resnet20', '--dataset', "
                          f"'mnist5k', '--board', 'pynq-z2', '--slu', '--out', {str(out)!r}]))")
    assert r.returncode == 0, r.stderr
    assert "resnet20 for mnist5k on pynq-z2: 29 engine convs" in r.stdout
    plan = pm.load(str(out))
    assert plan.network["in_channels"] == 1 and plan.network["gates"] == 8
    weightsfile.read(str(out), plan)


def test_e2t_plan_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["plan", "--model", "resnet110", "--dataset", "cifar10", "--batch", "256", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("e2t: error: plan.json: ddr.bytes: the DDR footprint") and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["plan", "--model", "resnet21", "--out", str(out)]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".p.tmp") for p in tmp_path.iterdir())
