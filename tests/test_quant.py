"""The PyTorch reference (reference/quant.py) against contract/numerics.py: integer equality."""
import math

import numpy as np
import pytest
import torch

from contract import numerics as nx
from reference import quant as q
from test_numerics import SHAPES, rand_int


def T(a):
    return torch.from_numpy(np.asarray(a, dtype=np.int64))


def test_primitives_match():
    rng = np.random.default_rng(0)
    v = rng.integers(-2**40, 2**40, 500)
    s = rng.integers(-3, 25, 500)
    assert np.array_equal(q.rshift_round(T(v), T(s)).numpy(), nx.rshift_round(v, s))
    x = (rng.standard_normal((3, 4, 5, 5)) * 10.0 ** rng.uniform(-6, 3)).astype(np.float32)
    x.ravel()[:3] = [0.5 * 2**-7, -0.5 * 2**-7, 1.5 * 2**-7]  # ties, at a typical exponent
    for fmt in (nx.ACT, nx.GRAD):
        qt, et, st = q.quantize_tensor(torch.from_numpy(x), fmt)
        qn, en, sn = nx.quantize_tensor(x, fmt)
        assert et == en and st == sn and np.array_equal(qt.numpy(), qn)
    assert np.array_equal(q.msb(T(np.arange(-128, 128))).numpy(), nx.msb(np.arange(-128, 128)))


def test_weights_match():
    rng = np.random.default_rng(1)
    w = rng.integers(-2**30, 2**30, size=(8, 3, 3, 3)) >> rng.integers(0, 30, size=(8, 1, 1, 1))
    wq, s = q.weights_for_use(T(w))
    wn, sn = nx.weights_for_use(w)
    assert np.array_equal(wq.numpy(), wn) and np.array_equal(s.numpy(), sn)
    wf = (rng.standard_normal((8, 3, 3, 3)) * 10.0 ** rng.uniform(-4, 1, size=(8, 1, 1, 1))).astype(np.float32)
    wq, e = q.weights_for_use_from_float(torch.from_numpy(wf))
    wn, en = nx.weights_for_use_from_float(wf)
    assert np.array_equal(wq.numpy(), wn) and np.array_equal(e.numpy(), en)
    assert np.abs(wn).max() <= 127


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_ops_match(shape):
    n, c, o, h, w, k, stride, pad = shape
    rng = np.random.default_rng(hash(shape) % 2**32)
    x = rand_int(rng, nx.ACT, (n, c, h, w))
    wq = rand_int(rng, nx.WGT, (o, c, k, k))
    yt, rt = q.conv_fwd(T(x), T(wq), stride, pad)
    yn, rn = nx.conv_fwd(x, wq, stride, pad)
    assert rt == rn and np.array_equal(yt.numpy(), yn)
    g = rand_int(rng, nx.GRAD, yn.shape)
    e = rng.integers(-30, -5, size=o)
    gt, rt, et = q.conv_bwd_data(T(g), T(wq), T(e), stride, pad, x.shape)
    gn, rn, en = nx.conv_bwd_data(g, wq, e, stride, pad, (h, w))
    assert (rt, et) == (rn, en) and np.array_equal(gt.numpy(), gn)
    for x_in, x_max in ((x, 128), (nx.msb(x), 8)):
        assert np.array_equal(q.conv_wgrad(T(x_in), T(g), wq.shape, stride, pad).numpy(),
                              nx.conv_wgrad(x_in, g, k, stride, pad, x_max))


@pytest.mark.parametrize("e_w", [-40, -24, -10])
def test_update_matches(e_w):
    rng = np.random.default_rng(7)
    w = rng.integers(-2**31, 2**31, size=(5, 2, 3, 3))
    buf = rng.integers(-2**31, 2**31, size=w.shape)
    sign = rng.integers(-1, 2, size=w.shape)
    k = nx.UpdateConstants.from_floats(0.05, 5e-4, 0.9)
    wt, bt, st = q.sign_update(T(w), e_w, T(buf), T(sign), k)
    wn, bn, sn = nx.sign_update(w, e_w, buf, sign, k)
    assert np.array_equal(wt.numpy(), wn) and np.array_equal(bt.numpy(), bn) and st == sn
    rt, ert = q.renormalize(wt, e_w)
    rn, ern = nx.renormalize(wn, e_w)
    assert ert == ern and np.array_equal(rt.numpy(), rn)


def layer_step(mode, shape, psg=None, seed=0):
    """One forward/backward of a QConv2d; returns the layer, input, output, grads."""
    n, c, o, h, w, k, stride, pad = shape
    torch.manual_seed(seed)
    layer = q.QConv2d(c, o, k, stride=stride, padding=pad, bias=False, mode=mode, psg=psg)
    x = (torch.rand(n, c, h, w) * 3).requires_grad_(True)
    y = layer(x)
    g = torch.randn_like(y) * 1e-3
    y.backward(g)
    if mode == "psg":
        assert (layer.w_master != 0).any()
    return layer, x, y, g


@pytest.mark.parametrize("shape", SHAPES[1:6])
@pytest.mark.parametrize("psg", [q.PSGConfig(tau=1e-4), q.PSGConfig(tau=0.0),  # tau 0: no full gradient computed
                                 q.PSGConfig(ratio=0.2, tile_o=2, tile_i=2)])
def test_psg_layer_equals_contract(shape, psg):
    n, c, o, h, w, k, stride, pad = shape
    layer, x, y, g = layer_step("psg", shape, psg)
    w_master = layer.w_master.numpy()
    # forward
    xq, ex, _ = nx.quantize_tensor(x.detach().numpy(), nx.ACT)
    wq, s = nx.weights_for_use(w_master)
    yq, r = nx.conv_fwd(xq, wq, stride, pad)
    e_out = (ex + layer.w_exp + s + r).reshape(1, -1, 1, 1)
    assert np.array_equal(y.detach().numpy(), np.ldexp(yq.astype(np.float64), e_out).astype(np.float32))
    # backward to the input
    gq, eg, _ = nx.quantize_tensor(g.numpy(), nx.GRAD)
    gx, r, e_ref = nx.conv_bwd_data(gq, wq, layer.w_exp + s, stride, pad, (h, w))
    assert np.array_equal(x.grad.numpy(), np.ldexp(gx.astype(np.float64), eg + e_ref + r).astype(np.float32))
    # sign weight gradient
    g_full = nx.conv_wgrad(xq, gq, k, stride, pad, 128)
    g_msb = nx.conv_wgrad(nx.msb(xq), gq, k, stride, pad, 8)
    if psg.ratio is None:
        sign, sure = nx.psg_select(g_msb, g_full, T=nx.threshold_abs(psg.tau, ex, eg))
    else:
        sign, sure = nx.psg_select(g_msb, g_full, R=nx.ratio_fixed(psg.ratio))
    assert np.array_equal(layer.weight.grad.numpy(), sign.astype(np.float32))
    assert layer.stats["predicted"] == int(sure.sum())
    stats = layer.stats
    assert (stats["tiles"], stats["tiles_recomputed"], stats["pairs_recomputed"]) == \
        nx.uncertain_tiles(sure, psg.tile_o, psg.tile_i)


def test_fixed_layer_weight_gradient_is_exact_full_gradient():
    shape = SHAPES[2]
    n, c, o, h, w, k, stride, pad = shape
    layer, x, y, g = layer_step("fixed", shape)
    xq, ex, _ = nx.quantize_tensor(x.detach().numpy(), nx.ACT)
    gq, eg, _ = nx.quantize_tensor(g.numpy(), nx.GRAD)
    g_full = nx.conv_wgrad(xq, gq, k, stride, pad, 128)
    assert np.array_equal(layer.weight.grad.numpy(), np.ldexp(g_full.astype(np.float64), ex + eg).astype(np.float32))


def test_psg_thresholds_zero_and_infinite():
    shape = SHAPES[1]
    n, c, o, h, w, k, stride, pad = shape
    zero, x, _, g = layer_step("psg", shape, q.PSGConfig(tau=0.0))
    inf, _, _, _ = layer_step("psg", shape, q.PSGConfig(tau=math.inf))
    xq, ex, _ = nx.quantize_tensor(x.detach().numpy(), nx.ACT)
    gq, eg, _ = nx.quantize_tensor(g.numpy(), nx.GRAD)
    g_msb = nx.conv_wgrad(nx.msb(xq), gq, k, stride, pad, 8)
    g_full = nx.conv_wgrad(xq, gq, k, stride, pad, 128)
    assert np.array_equal(zero.weight.grad.numpy(), np.sign(g_msb))
    assert np.array_equal(inf.weight.grad.numpy(), np.sign(g_full))
    assert zero.stats["predicted"] == g_msb.size and inf.stats["predicted"] == 0


def test_updater_applies_contract_update_and_keeps_float_view():
    layer, _, _, _ = layer_step("psg", SHAPES[1], q.PSGConfig(tau=1e-5))
    model = torch.nn.Sequential(layer)
    upd = q.PSGUpdater(model, weight_decay=1e-4, momentum=0.9)
    w0, e0, sign = layer.w_master.numpy().copy(), layer.w_exp, layer.weight.grad.numpy().astype(np.int64)
    upd.step(0.1)
    wn, bn, _ = nx.sign_update(w0, e0, np.zeros_like(w0), sign, nx.UpdateConstants.from_floats(0.1, 1e-4, 0.9))
    wn, en = nx.renormalize(wn, e0)
    assert layer.w_exp == en and np.array_equal(layer.w_master.numpy(), wn)
    assert np.array_equal(upd.buffers[id(layer)].numpy(), bn)
    assert np.array_equal(layer.weight.detach().numpy(), np.ldexp(wn.astype(np.float64), en).astype(np.float32))
    assert layer.weight.grad is None  # the next backward's signs start afresh


def test_predictive_forward_zeroes_predicted_negatives():
    shape = SHAPES[1]
    layer, x, y, g = layer_step("psg", shape, q.PSGConfig(predictive_forward=True))
    n, c, o, h, w, k, stride, pad = shape
    xq, _, _ = nx.quantize_tensor(x.detach().numpy(), nx.ACT)
    wq, _ = nx.weights_for_use(layer.w_master.numpy())
    y_msb, _ = nx.conv_fwd(nx.msb(xq), wq, stride, pad)
    assert (y.detach().numpy()[y_msb < 0] == 0).all()
    assert (y_msb < 0).any() and (y.detach().numpy()[y_msb >= 0] != 0).any()
