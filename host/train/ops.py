"""The op table: one class per plan op type, its forward and its backward side by side,
registered by type (``OPS``). Training (host/train/trainstep.py) and inference
(host/train/forward.py) walk the plan through this one table (host/train/walk.py), so a new op
is written once: a class with ``forward(w, op, ins) -> out`` and ``backward(w, op, g) -> one
gradient per input (None for none)``, registered with ``@register("type")``. ``w`` is the
walk: the tensors, the parameters ``w.p``, the convs' engine ``w.layers``, ``w.training``, and
``w.cache`` for what the backward needs, ``w.trainable`` what trains (host/train/trainable.py: an
op whose parameters are frozen computes no gradient for them, an input that gets no gradient gets
none computed). Beside them ``work(plan, op, n, phase)`` counts the host's numpy passes of each
(contract/opcount.py's host slots, hostops.py's rule) from the sizes it ran on, of what trains
(``trainable``): what the on-engine trainer records and ``e2t estimate`` derives from a plan.

The convs run on the engine (quantize, CONV_FWD, the output exponent, dequantize;
docs/numerics.md); the rest on the host in float32 (host/train/hostops.py). In training the
SLU gate draws ``p > u`` and passes the gradient straight through to p; in inference it decides
``p > threshold``. PSG runs in the engine (CONV_WGRAD's predictor modes); without PSG the engine
returns the full weight gradient and the update uses its sign.
"""
from __future__ import annotations

import abc

import numpy as np

from contract import numerics as nx, parallel
from contract.errors import E2TError
from contract.opcount import merge_host

from . import hostops
from .hostops import CAST_32, CAST_64, COPY_32, F32_BIN, F32_MAP, passes
from .trainable import EVERYTHING

F32, F64 = np.float32, np.float64

OPS: dict = {}  # plan op type -> its Op


def register(kind: str):
    """Class decorator: an instance of the class runs the plan's ops of type ``kind``."""
    def add(cls):
        OPS[kind] = cls()
        return cls
    return add


class Op(abc.ABC):
    """An op type. ``gathered``: in a gated block it runs on the images whose gate is on."""
    gathered = True

    @abc.abstractmethod
    def forward(self, w, op: dict, ins: list) -> np.ndarray:
        """The op's output from its inputs ``ins`` (the walk ``w`` holds the rest)."""

    def backward(self, w, op: dict, g: np.ndarray) -> list:
        raise E2TError(f"training: no backward for op type '{op['type']}'")

    def work(self, plan, op: dict, n: int, phase: str, *, psg: bool = True, on: int | None = None,
             trainable=EVERYTHING) -> dict:
        """The host's work of the op in training on ``n`` images, in ``phase``: "fwd" (its
        forward), "bwd_data" (its backward), "update" (after the step; the SGD of its host
        parameters is hostwork.update_work's); {} for none. ``psg``: the engine picks the weight
        gradient's signs; ``on``: a mix's images whose gate is on (default n); ``trainable``:
        what trains (a trainable.Trainable)."""
        raise E2TError(f"training: no host work count for op type '{op['type']}': give its class a work method")


def per_image(plan, tensor: str) -> int:
    """Elements of one image's ``tensor``."""
    return int(np.prod(plan.tensors[tensor]))


def start_wgrad(w, op: dict, n: int, e_x: int, e_g: int, **tensors: str) -> None:
    """The conv's CONV_WGRAD on ``n`` images, started while the host goes on: PSG's mode (its
    threshold from the input's and gradient's exponents ``e_x``, ``e_g``) or, without PSG, the full
    gradient whose signs the host then takes. ``tensors``: contract v2's step tensors ``act``, ``grad``."""
    s, psg = w.layers, w.psg
    if psg is None:
        def signs():
            s.buffer(op, "sgn")[...] = np.sign(s.wgrad_result(op))
        s.conv_wgrad(op, n, "full", then=signs, wait=False, **tensors)
    elif psg["ratio"] is not None:
        s.conv_wgrad(op, n, "ratio", nx.ratio_fixed(psg["ratio"]), wait=False, **tensors)
    else:
        s.conv_wgrad(op, n, "abs", nx.threshold_abs(psg["tau"], e_x, e_g), wait=False, **tensors)
    w.updated.add(op["name"])


def update_running(w, op: dict, mean, var, m: int) -> None:
    """A BatchNorm's running statistics after a batch of ``m`` elements a channel with (float64)
    ``mean`` and biased ``var``, in float32 as PyTorch's are."""
    if m > 1:
        p, mom = op["params"], F32(op["momentum"])
        w.p[p["running_mean"]] = ((1 - mom) * w.p[p["running_mean"]] + mom * mean.astype(F32)).astype(F32)
        unbiased = (var * m / (m - 1)).astype(F32)
        w.p[p["running_var"]] = ((1 - mom) * w.p[p["running_var"]] + mom * unbiased).astype(F32)


@register("conv")
class Conv(Op):
    """On the engine: the int8 input's per-tensor exponent e_x, CONV_FWD's shift r, the
    weights' exponent and per-channel shifts make the output's exponent."""

    def forward(self, w, op, ins):
        x_q, e_x, _ = nx.quantize_tensor(ins[0], nx.ACT, np.int8)
        yq, r = w.layers.conv_fwd(op, x_q)
        if w.record is not None:
            w.record[op["name"]] = yq
        e = e_x + op["wq_exp"] + w.layers.buffer(op, "wshift").astype(np.int64) + r
        w.cache[op["name"]] = (len(x_q), e_x)
        return nx.dequantize(yq, e.reshape(1, -1, 1, 1))

    def backward(self, w, op, g):
        """The input gradient first (where the input gets one), then the weight gradient (where
        the conv trains), which the engine computes while the host goes on with the layers below
        (the next engine call or DDR access waits)."""
        s = w.layers
        n, e_x = w.cache[op["name"]]
        g_q, e_g, _ = nx.quantize_tensor(g, nx.GRAD, np.int16)
        s.set_grad(op, g_q)
        gx = None
        if op["input_grad"] and w.trainable.wants(op["inputs"][0]):
            q, r, e_ref = s.conv_bwd_data(op, n)
            gx = nx.dequantize(q, e_g + op["wq_exp"] + e_ref + r)
        if w.trainable.trains(op):
            start_wgrad(w, op, n, e_x, e_g)
        return [gx]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: quantize x, its copy into act, dequantize y; bwd_data: quantize g, its copy into grad,
        the input gradient's bound (g's range) and its dequantize, without PSG the signs of G_full;
        update: the weights' refresh and their bounds (EngineSession.refresh_weights, weight_bounds).
        A frozen conv: no signs, no refresh; an input that gets no gradient: no input gradient."""
        x, y = n * op["c_in"] * op["h"] * op["w"], n * op["c_out"] * op["ho"] * op["wo"]
        weights = op["c_out"] * op["c_in"] * op["k"] ** 2
        if phase == "fwd":
            return merge_host(hostops.quantize_work(x, 1), passes(x, (1, 1, 0, "int")), hostops.dequantize_work(y))
        trains = trainable.trains(op)
        if phase == "bwd_data":
            parts = [hostops.quantize_work(y, 2), passes(y, (2, 2, 0, "int"))]
            if op["input_grad"] and trainable.wants(op["inputs"][0]):
                parts += [hostops.grad_range_work(y), hostops.dequantize_work(x)]
            if not psg and trains:
                parts.append(hostops.signs_work(weights))
            return merge_host(*parts)
        return merge_host(hostops.refresh_work(weights), hostops.weight_bounds_work(weights)) if trains else {}


@register("batchnorm")
class BatchNorm(Op):
    """Batch statistics in training (and the running ones updated), running ones in inference."""

    def forward(self, w, op, ins):
        p, x = op["params"], ins[0]
        if not w.training:
            return hostops.batchnorm_eval(x, w.p[p["weight"]], w.p[p["bias"]], w.p[p["running_mean"]],
                                          w.p[p["running_var"]], op["eps"])
        out, xhat, invstd, mean, var = hostops.bn_train(x, w.p[p["weight"]], w.p[p["bias"]], op["eps"])
        update_running(w, op, mean, var, x.size // x.shape[1])
        w.cache[op["name"]] = (xhat, invstd)
        return out

    def backward(self, w, op, g):
        xhat, invstd = w.cache[op["name"]]
        p = op["params"]
        dx, dgamma, dbeta = hostops.bn_backward(g, xhat, invstd, w.p[p["weight"]], w.trainable.wants(op["inputs"][0]))
        if w.trainable.trains(op):
            w.acc(p["weight"], dgamma)
            w.acc(p["bias"], dbeta)
        return [dx]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        size = n * per_image(plan, op["output"])
        if phase == "fwd":
            return hostops.bn_train_work(size)
        return hostops.bn_backward_work(size, trainable.wants(op["inputs"][0])) if phase == "bwd_data" else {}


@register("relu")
class ReLU(Op):
    def forward(self, w, op, ins):
        out = hostops.relu(ins[0])
        if w.training:
            w.cache[op["name"]] = parallel.ufunc(np.greater, ins[0], F32(0), bool)
        return out

    def backward(self, w, op, g):
        return [parallel.ufunc(np.multiply, g, w.cache[op["name"]], g.dtype)]  # with the mask: np.where branches

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: max(x, 0) and the mask x > 0; bwd_data: g times the mask."""
        size = n * per_image(plan, op["output"])
        if phase == "fwd":
            return merge_host(hostops.relu_work(size), passes(size, (4, 1, 1, "f32")))
        return passes(size, (5, 4, 1, "f32")) if phase == "bwd_data" else {}


@register("add")
class Add(Op):
    """The residual add."""

    def forward(self, w, op, ins):
        return parallel.ufunc(np.add, ins[0], ins[1], np.result_type(ins[0], ins[1]))

    def backward(self, w, op, g):
        return [g, g]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        return passes(n * per_image(plan, op["output"]), F32_BIN) if phase == "fwd" else {}


@register("avgpool")
class AvgPool(Op):
    """Global average pooling NCHW -> NC11."""

    def forward(self, w, op, ins):
        w.cache[op["name"]] = ins[0].shape
        return hostops.avgpool(ins[0])

    def backward(self, w, op, g):
        shape = w.cache[op["name"]]
        return [np.broadcast_to(g / F32(shape[2] * shape[3]), shape).astype(F32)]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """bwd_data: g / (h w), then its copy to every pixel."""
        c, h, wd = plan.tensors[op["inputs"][0]]
        if phase == "fwd":
            return hostops.avgpool_work(n, c, h * wd)
        if phase != "bwd_data":
            return {}
        return merge_host(passes(n * c, F32_MAP), passes(n * c * h * wd, (0, 4, 0, "f32")))


@register("linear")
class Linear(Op):
    """The classifier, float64 sums rounded once, forward and backward."""

    def forward(self, w, op, ins):
        xf = ins[0].reshape(len(ins[0]), -1)
        w.cache[op["name"]] = xf
        return hostops.linear(xf, w.p[op["params"]["weight"]], w.p[op["params"]["bias"]])

    def backward(self, w, op, g):
        xf, p = w.cache[op["name"]], op["params"]
        g64 = g.astype(F64)
        if w.trainable.trains(op):
            w.acc(p["weight"], (g64.T @ xf.astype(F64)).astype(F32))
            w.acc(p["bias"], g64.sum(0).astype(F32))
        if not w.trainable.wants(op["inputs"][0]):
            return [None]
        dx = (g64 @ w.p[p["weight"]].astype(F64)).astype(F32)
        return [dx.reshape(len(g), *w.plan.tensors[op["inputs"][0]])]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """bwd_data: g to float64; training, x to float64, g^T x and its rounding, g's column sums;
        where the input gets a gradient, W to float64, g W and its rounding."""
        i, o = op["in_features"], op["out_features"]
        if phase == "fwd":
            return hostops.linear_work(n, i, o)
        if phase != "bwd_data":
            return {}
        parts = [passes(n * o, CAST_64)]
        if trainable.trains(op):
            parts += [passes(n * i, CAST_64), hostops.product_work(o, n, i), passes(o * i, CAST_32),
                      passes(n * o, (8, 0, 1, "f64"))]
        if trainable.wants(op["inputs"][0]):
            parts += [passes(o * i, CAST_64), hostops.product_work(n, o, i), passes(n * i, CAST_32)]
        return merge_host(*parts)


@register("gate")
class Gate(Op):
    """SLU's gate: one LSTM step (its state carried from gate to gate, ``w.state``), a linear
    layer, a sigmoid and the decision: ``p > u`` (u drawn) in training, ``p > threshold`` in
    inference. The mask (N, 1) is its output; ``w.picks`` its images, ``w.decisions`` the masks."""

    def forward(self, w, op, ins):
        p, e = op["params"], ins[0]
        x = e.reshape(len(e), -1)
        h, c, (i, f, g, o, tc) = hostops.lstm_step(x, w.state, w.p[p["weight_ih"]], w.p[p["weight_hh"]],
                                                   w.p[p["bias_ih"]], w.p[p["bias_hh"]])
        prob = hostops.sigmoid(hostops.linear(h, w.p[p["proj_weight"]], w.p[p["proj_bias"]]))[:, 0]
        u = w.rng.random(len(prob)).astype(F32) if w.training else F32(op["threshold"])
        mask = prob > u
        w.picks[op["index"]] = np.flatnonzero(mask)
        w.decisions.append(mask)
        w.cache[op["name"]] = (x, w.state, i, f, g, o, c, tc, h, prob)
        w.state = (h, c)
        return mask.astype(F32).reshape(-1, 1)

    def backward(self, w, op, g_mask):
        """dL/dp = dL/dm (straight-through) plus the cost loss's s * beta * w_l; then back through
        the sigmoid, the output layer and the LSTM step, carrying dh, dc to the previous gate
        (``w.carry``). The images a block skipped give their gate only the cost loss's gradient."""
        j, p = op["index"], op["params"]
        x, state, i, f, gg, o, c, tc, h, prob = w.cache[op["name"]]
        dp = g_mask[:, 0].astype(F32)
        if w.slu_cost is not None:  # d(s beta sum_l w_l m_l)/dm_j, rounded as autograd rounds it
            cost = w.slu_cost
            dp = dp + F32(F32(cost["sign"] * cost["beta"]) * F32(cost["weights"][j]))
        dz = (dp * prob * (1 - prob)).reshape(-1, 1).astype(F32)
        w.acc(p["proj_weight"], hostops.matmul(dz.T, h))
        w.acc(p["proj_bias"], dz.sum(0, dtype=F64).astype(F32))
        dh = dz * w.p[p["proj_weight"]]  # (N, 1) x (1, H): one product each
        dc = np.zeros_like(c)
        if w.carry is not None:
            dh, dc = dh + w.carry[0], dc + w.carry[1]
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di, dg = dc * gg, dc * i
        df = dc * state[1] if state is not None else np.zeros_like(dc)
        d4 = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - gg * gg), do * o * (1 - o)], 1).astype(F32)
        w.acc(p["weight_ih"], hostops.matmul(d4.T, x))
        db = d4.sum(0, dtype=F64).astype(F32)
        w.acc(p["bias_ih"], db)
        w.acc(p["bias_hh"], db)
        w.carry = None
        if state is not None:
            w.acc(p["weight_hh"], hostops.matmul(d4.T, state[0]))
            if w.trainable.carries(op):  # the gate before trains
                w.carry = (hostops.matmul(d4, w.p[p["weight_hh"]]), (dc * f).astype(F32))
        return [hostops.matmul(d4, w.p[p["weight_ih"]]).reshape(len(x), -1, 1, 1)]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """The LSTM step, the output layer and the sigmoid, and their backward pass over the
        (n, hidden) and (n, 4 hidden) arrays and the products; the draw, the mask and the
        backward's one value per image (dL/dp, dz) are left out. The first gate starts from no
        state; every gate but the last gets dh, dc carried from the next, and carries them on to
        the gate before where that one trains."""
        i, h, j = per_image(plan, op["inputs"][0]), op["hidden"], op["index"]
        state, carried, nh, g4 = j > 0, j < plan.network["gates"] - 1, n * op["hidden"], 4 * op["hidden"]
        if phase == "fwd":
            return merge_host(hostops.lstm_step_work(n, i, h, state), hostops.linear_work(n, h, 1),
                              hostops.sigmoid_work(n))
        if phase != "bwd_data":
            return {}
        cell = [(0, 4, 1, "f32"), (0, 4, 0, "f32")] + [F32_BIN] * 2 * carried  # dh = dz w, dc = 0, + the carry
        cell += [F32_BIN, F32_BIN, F32_MAP, F32_MAP, F32_BIN, F32_BIN, F32_BIN, F32_BIN]  # do, dc, di, dg
        cell += [F32_BIN if state else (0, 4, 0, "f32")]  # df
        cell += [F32_BIN, F32_MAP, F32_BIN] * 3 + [F32_MAP, F32_MAP, F32_BIN]  # the four gates' derivatives
        parts = [hostops.matmul_work(1, n, h), passes(nh, *cell), passes(n * g4, COPY_32, COPY_32, (4, 0, 1, "f64")),
                 hostops.matmul_work(g4, n, i), hostops.matmul_work(n, g4, i)]
        if state:
            parts.append(hostops.matmul_work(g4, n, h))
        if state and trainable.carries(op):
            parts += [hostops.matmul_work(n, g4, h), passes(nh, F32_BIN, COPY_32)]
        return merge_host(*parts)


@register("mix")
class Mix(Op):
    """A gated block's output joined with its shortcut: the block's images scattered back into
    the shortcut (gathered), or selected per image (``slu="mask"``, inference only)."""
    gathered = False

    def forward(self, w, op, ins):
        mask, block, short = ins
        if w.slu == "mask":
            return np.where(mask.reshape(-1, 1, 1, 1) > 0, block, short)
        out = parallel.copy(short)
        out[w.picks[op["gate"]]] = block
        w.cache[op["name"]] = (block, short)
        return out

    def backward(self, w, op, g):
        """dL/dm, the block's images' gradient and the shortcut's, each where its input gets one."""
        block, short = w.cache[op["name"]]
        on, (mask, into_block, into_short) = w.picks[op["gate"]], map(w.trainable.wants, op["inputs"])
        g_short = g_on = None
        if into_short:
            g_short = parallel.copy(g)
            g_short[on] = 0
        if mask or into_block:
            g_on = parallel.take(g, on)
        if not mask:
            return [None, g_on, g_short]
        dm = np.zeros((len(g), 1), F32)
        if len(on):  # dL/dm of an image: its own float64 sum, the images on two threads
            sums = np.empty(len(on), F64)

            def part(i, j):
                d = g_on[i:j].astype(F64) * (block[i:j] - short[on[i:j]])
                sums[i:j] = d.reshape(j - i, -1).sum(1)

            parallel.halves(part, len(on), block.size)
            dm[on, 0] = sums
        return [dm, g_on, g_short]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: the shortcut's copy, the block's images into it; bwd_data: g's copy and its block
        images zeroed (the shortcut's gradient), g's block images taken (the block's, dL/dm's);
        dL/dm: g to float64, the shortcut's images taken, block - them, the product, its sums."""
        s, k = per_image(plan, op["output"]), n if on is None else on
        if phase == "fwd":
            return merge_host(passes(n * s, COPY_32), passes(k * s, COPY_32))
        if phase != "bwd_data":
            return {}
        mask, into_block, into_short = map(trainable.wants, op["inputs"])
        parts = [passes(n * s, COPY_32), passes(k * s, (0, 4, 0, "f32"))] if into_short else []
        if mask or into_block:
            parts.append(passes(k * s, COPY_32))
        if k and mask:
            parts.append(passes(k * s, CAST_64, COPY_32, F32_BIN, (12, 8, 1, "f64"), (8, 0, 1, "f64")))
        return merge_host(*parts)


@register("loss")
class Loss(Op):
    """Softmax cross-entropy against ``w.labels`` (zeros without labels: see forward.evaluate);
    the mean's gradient to the logits is computed with it."""

    def forward(self, w, op, ins):
        if w.labels is None:
            return np.zeros((len(ins[0]), 1), F32)
        w.losses, w.cache[op["name"]] = hostops.softmax_cross_entropy(ins[0], w.labels, grad=True)
        return w.losses.astype(F32).reshape(-1, 1)

    def backward(self, w, op, g):
        return [w.cache[op["name"]]]  # g is dL/dL = 1 (walk.Walk.backward)

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        return hostops.softmax_cross_entropy_work(n, per_image(plan, op["inputs"][0])) if phase == "fwd" else {}
