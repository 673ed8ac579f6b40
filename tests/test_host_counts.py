"""The host's work, counted (issue 23): each op's bytes read and written, flops and numpy calls
against counts made by hand from the shapes; a run's recorded counts against those derived from
its plan (host/train/hostwork.step_work); SLU's gathered ops counted on their sub-batch."""
import pytest

from host.plan import planbuild
from host.train.config import TrainConfig
from host.train.hostwork import step_work
from host.train.ops import OPS
from host.train.trainer import EngineTrainer

N = 8  # images per step


def slot(read, written, f32=0, f64=0, int_=0, calls=0):
    return {"bytes": read + written, "read": read, "written": written, "flops": {"f32": f32, "f64": f64, "int": int_},
            "calls": calls}


def bn_forward(e):  # the two sums (x, x * x) into float64; - mean, *= invstd, * gamma, += beta in float32
    return slot(4 * e + 4 * e + 4 * (4 * e), 4 * (4 * e), f32=4 * e, f64=e + 2 * e, calls=6)


def relu_forward(e):  # max(x, 0), the bool mask x > 0
    return slot(4 * e + 4 * e, 4 * e + 1 * e, f32=2 * e, calls=2)


@pytest.fixture(scope="module")
def plan():
    return planbuild.from_model("resnet8", 1, 10, 32, "pynq-z2", N)[0]


def _op(plan, name):
    return next(op for op in plan.ops if op["name"] == name)


def _work(plan, name, phase, n=N, **kw):
    op = _op(plan, name)
    return OPS[op["type"]].work(plan, op, n, phase, **kw)


def test_host_ops_count_what_their_numpy_passes_read_write_and_compute(plan):
    e = N * 16 * 32 * 32  # elements of one 16 x 32 x 32 activation
    assert _work(plan, "bn1", "fwd") == bn_forward(e)
    # sums of g and g * xhat; m g, -= dbeta, xhat * dgamma, -= it, *= a
    assert _work(plan, "bn1", "bwd_data") == slot(4 * e + 8 * e + 4 * e + 4 * e + 4 * e + 8 * e + 4 * e, 5 * (4 * e),
                                                   f32=5 * e, f64=e + 2 * e, calls=7)
    assert _work(plan, "bn1.relu", "fwd") == relu_forward(e)
    assert _work(plan, "bn1.relu", "bwd_data") == slot(4 * e + 1 * e, 4 * e, f32=e, calls=1)  # g times the mask
    assert _work(plan, "blocks.0.bn2.add", "fwd") == slot(4 * e + 4 * e, 4 * e, f32=e, calls=1)
    assert _work(plan, "blocks.0.bn2.add", "bwd_data") == {}  # the gradient passes to both inputs as it is

    x = y = e
    w = 16 * 16 * 3 * 3
    # forward: quantize to int8 (max, min, scale, floor, fraction, int8 store, >= 1/2, int8 add), the copy
    # into the act buffer, dequantize (float32 cast of the int32 y, scale); the output bound is the
    # weights' (EngineSession.weight_bounds), kept from the last update
    quantize_r, quantize_w = 4 + 4 + 4 + 4 + 8 + 4 + 4 + (1 + 1), 4 + 4 + 4 + 1 + 1 + 1
    assert _work(plan, "blocks.0.conv1", "fwd") == slot(
        quantize_r * x + 1 * x + (4 + 4) * y, quantize_w * x + 1 * x + (4 + 4) * y,
        f32=6 * x + y, int_=x, calls=8 + 1 + 2)
    # backward: quantize g to int16, its copy into grad; the bound (g's min and max, times the weights'
    # kept bound); dequantize the input gradient
    g_r, g_w = 4 + 4 + 4 + 4 + 8 + 4 + 4 + (2 + 1), 4 + 4 + 4 + 2 + 1 + 2
    bwd = slot(g_r * y + 2 * y + (2 + 2) * y + (4 + 4) * x,
               g_w * y + 2 * y + (4 + 4) * x,
               f32=6 * y + x, int_=y + 2 * y, calls=8 + 1 + 2 + 2)
    assert _work(plan, "blocks.0.conv1", "bwd_data") == bwd
    # without PSG the host takes the signs of the int64 G_full and stores them as int8
    assert _work(plan, "blocks.0.conv1", "bwd_data", psg=False) == {
        **bwd, "read": bwd["read"] + 16 * w, "written": bwd["written"] + 9 * w, "bytes": bwd["bytes"] + 25 * w,
        "flops": {**bwd["flops"], "int": bwd["flops"]["int"] + w}, "calls": bwd["calls"] + 2}
    # update: renormalize (int64 copy of the int32 master, abs, max), weights_for_use (copy, abs, row
    # maxima, + half, >>, <<, where), the int8 store; then the new weights' bounds: the forward's (int64
    # copy, abs, sums), the aligned weights (int64 copy, + half, >>, <<, where) and the backward's (abs,
    # transposed copy, sums)
    weights_r, weights_w = 1 + 8 + 8 + 1 + 8 + 8 + 8 + 16 + 8 + 8 + 8, 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8
    assert _work(plan, "blocks.0.conv1", "update") == slot(
        (4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 8 + 16 + 8) * w + weights_r * w,
        (8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 1) * w + weights_w * w, int_=8 * w + 8 * w, calls=11 + 11)

    s, nc = N * 64 * 8 * 8, N * 64  # the pooled tensor, its means; one chunk of images
    assert _work(plan, "blocks.2.bn2.add.relu.avgpool", "fwd") == slot(
        4 * s + 8 * s + 8 * nc + 8 * nc, 8 * s + 8 * nc + 4 * nc, f64=s + nc, calls=4)
    assert _work(plan, "blocks.2.bn2.add.relu.avgpool", "bwd_data") == slot(4 * nc, 4 * nc + 4 * s, f32=nc, calls=2)

    i, o = 64, 10  # x and W to float64, x W^T, + b, rounded to float32
    assert _work(plan, "fc", "fwd") == slot(
        4 * N * i + 4 * o * i + 8 * (N * i + i * o) + 8 * N * o + 8 * N * o,
        8 * N * i + 8 * o * i + 8 * N * o + 8 * N * o + 4 * N * o, f64=2 * N * i * o + N * o, calls=5)
    # g and x to float64, g^T x, rounded; g's sums; W to float64, g W, rounded
    assert _work(plan, "fc", "bwd_data") == slot(
        4 * N * o + 4 * N * i + 8 * (o * N + N * i) + 8 * o * i + 8 * N * o + 4 * o * i + 8 * (N * o + o * i)
        + 8 * N * i,
        8 * N * o + 8 * N * i + 8 * o * i + 4 * o * i + 8 * o * i + 8 * N * i + 4 * N * i,
        f64=2 * o * N * i + N * o + 2 * N * o * i, calls=8)
    assert _work(plan, "loss", "fwd") == slot(  # to float64, max, - max, exp, sum, / sum, / N, rounded
        4 * N * o + 8 * 6 * N * o + 8 * N * o, 8 * N * o + 8 * 4 * N * o + 4 * N * o, f64=6 * N * o, calls=8)


def test_the_host_sgd_of_a_parameter_is_float64_work(plan):
    """bn1's gamma and beta (16 each): the zero gradient made ready, fma32 (float64 casts, product, TwoSum,
    the rounding and its check), mu buf + d and its copy, fma32 again."""
    fma_r = 4 + 8 + 4 + 6 * 16 + 8 + 4 + 16 + 8 + 8 + 2 + 1
    fma_w = 8 + 8 + 8 + 6 * 8 + 4 + 8 + 8 + 1 + 1 + 1
    c = 2 * 16
    got = step_work(plan)["per_layer"]["bn1"]["update"]
    assert got == slot((2 * fma_r + 4 + 8 + 4) * c, (4 + 2 * fma_w + 4 + 4 + 4) * c, f32=2 * c, f64=2 * 10 * c,
                       int_=2 * 2 * c, calls=2 * (1 + 2 * 16 + 3))


def _cfg(**kw):
    return TrainConfig(**{**dict(backend="emu", model="resnet8", dataset="digits", epochs=1, batch_size=N,
                                 precision="fixed", psg=True, lr=0.05), **kw})


def _one_step(cfg, tmp_path):
    t = EngineTrainer(cfg, str(tmp_path / "run"), progress=False, log=lambda m: None)
    t.iters_per_epoch = 1  # one kept step
    return t, t.train_epoch()


@pytest.mark.parametrize("psg", [True, False])
def test_a_training_step_records_what_the_plan_gives_without_running(tmp_path, psg):
    t, r = _one_step(_cfg(psg=psg), tmp_path)
    got = r["ops"]["host"]
    assert list(got["per_layer"]) == [op["name"] for op in t.plan.ops]
    assert got == step_work(t.plan, N, psg=psg)
    assert got["total"]["all"]["bytes"] == sum(got["total"][p]["bytes"] for p in ("fwd", "bwd_data", "update"))


def test_slu_s_gathered_ops_count_their_sub_batch(tmp_path):
    t, r = _one_step(_cfg(slu_target=0.5), tmp_path)
    k = round(r["block_executed"][1] * N)  # the images gate 0 sent through block 1
    assert 0 < k < N
    per = r["ops"]["host"]["per_layer"]
    e = 32 * 16 * 16  # one image's 32 x 16 x 16 activation
    assert per["blocks.1.bn1"]["fwd"] == bn_forward(k * e)
    assert per["blocks.1.bn1.relu"]["fwd"] == relu_forward(k * e)
    assert per["blocks.1.downsample.1"]["fwd"] == bn_forward(N * e)  # the shortcut runs on every image
    # the block's add takes the shortcut's k images (a copy), then adds
    assert per["blocks.1.bn2.add"]["fwd"] == slot(4 * k * e + 8 * k * e, 4 * k * e + 4 * k * e, f32=k * e, calls=2)
    # the mix copies the shortcut and writes the block's k images into it
    assert per["blocks.1.bn2.add.relu.mix"]["fwd"] == slot(4 * N * e + 4 * k * e, 4 * N * e + 4 * k * e, calls=2)
