"""One training step of a plan: forward and backward layer by layer, convs on the engine
(through an EngineSession), everything else on the host in numpy float32.

Host ops and their backward: BatchNorm with batch statistics (mean and variance summed in
float64, rounded once), ReLU, the residual add, the SLU gate (one LSTM step per gate, the
state carried from gate to gate and back-propagated through them, a linear layer, a sigmoid,
a sampled decision ``p > u`` with the straight-through gradient) and mix, global average
pooling, the classifier and softmax cross-entropy. SLU runs a gated block's ops on the images
whose gate is on only (gathered, then scattered back): the images it skips make no engine
call. Their gate gets no task gradient (the block's output does not exist for them), only the
cost loss's. PSG runs in the engine (CONV_WGRAD's predictor modes); without PSG the engine
returns the full weight gradient and the update uses its sign.
"""
from __future__ import annotations

import numpy as np

from contract import numerics as nx, parallel
from contract.errors import E2TError

from . import hostops

F32, F64 = np.float32, np.float64


def _bn_train(x, gamma, beta, eps):
    """BatchNorm with batch statistics: mean and E[x^2] summed in float64 (exact products),
    var = E[x^2] - mean^2, each statistic rounded once to float32 where it meets the data.
    The two sums, then the two halves of the batch, on two threads (contract/parallel.py)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    s1, s2 = parallel.pair(lambda: hostops.channel_sum(x), lambda: hostops.channel_sum(x, x), x.size)
    mean = s1 / m
    var = np.maximum(s2 / m - mean * mean, 0.0)
    invstd = (1.0 / np.sqrt(var + eps)).astype(F32)
    m32, inv, gm, bt = (v.reshape(shape) for v in (mean.astype(F32), invstd, gamma, beta))
    xhat = np.empty(x.shape, np.result_type(x, m32))
    out = np.empty(x.shape, np.result_type(xhat, gm, bt))

    def part(a, b):
        xh, o = xhat[a:b], out[a:b]
        np.subtract(x[a:b], m32, out=xh)
        xh *= inv
        np.multiply(xh, gm, out=o)
        o += bt

    parallel.halves(part, len(x), x.size)
    return out, xhat, invstd, mean, var


def _bn_backward(g, xhat, invstd, gamma):
    """dx = a * (m g - dbeta - xhat dgamma) with a = gamma invstd / m, in this order (the
    reference's), each step in place; the sums, then the batch's halves, on two threads."""
    shape = (1, -1) + (1,) * (g.ndim - 2)
    m = g.size // g.shape[1]
    s1, s2 = parallel.pair(lambda: hostops.channel_sum(g), lambda: hostops.channel_sum(g, xhat), g.size)
    dbeta, dgamma = s1.astype(F32), s2.astype(F32)
    db, dg, a = dbeta.reshape(shape), dgamma.reshape(shape), ((gamma * invstd) / F32(m)).reshape(shape)
    dx = np.empty(g.shape, np.result_type(g, F32))

    def part(i, j):
        d = dx[i:j]
        np.multiply(g[i:j], F32(m), out=d)
        d -= db
        d -= xhat[i:j] * dg
        d *= a

    parallel.halves(part, len(g), g.size)
    return dx, dgamma, dbeta


def _gradient_sum(parts: list | None) -> np.ndarray | None:
    """A tensor's gradient from its consumers: two float32 terms added (a float64 sum would
    round to the same), three or more summed in float64 and rounded once, so that the order in
    which they arrive (which differs between this and PyTorch's autograd) does not matter."""
    if not parts:
        return None
    if len(parts) <= 2:
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]
    flat = [np.ascontiguousarray(g, F32).reshape(-1) for g in parts]
    out = np.empty(parts[0].shape, F32)
    o = out.reshape(-1)

    def part(lo, hi):  # element by element the same sum, in a cached buffer
        buf = np.empty(min(hi - lo, hostops.CHUNK), F64)
        for s in range(lo, hi, hostops.CHUNK):
            b = buf[:min(hi - s, hostops.CHUNK)]
            np.copyto(b, flat[0][s:s + len(b)])
            for g in flat[1:]:
                np.add(b, g[s:s + len(b)], out=b)
            np.copyto(o[s:s + len(b)], b, casting="same_kind")

    parallel.halves(part, o.size, o.size)
    return out


class Step:
    """Forward and backward of one mini-batch; collects host gradients in ``grads``."""

    def __init__(self, plan, session, params: dict, psg: dict | None, slu_cost: dict | None, rng):
        self.plan, self.s, self.p = plan, session, params
        self.psg, self.slu_cost, self.rng = psg, slu_cost, rng
        self.grads = {}          # host parameter -> float32 gradient
        self.updated = set()     # convs that got a weight gradient this step

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean cross-entropy, logits)."""
        t, sub, self.cache, self.picks, state = {self.plan.data["input"]: x}, {}, {}, {}, None
        self.decisions, self.gate_cache, taken = [], {}, {}
        for op in self.plan.ops:
            kind, gate = op["type"], op.get("gate")
            gathered = gate is not None and kind != "mix"
            ins = []
            for n in op["inputs"]:
                if gathered and sub.get(n) != gate:  # a block's input, gathered once for all its ops
                    if (n, gate) not in taken:
                        taken[n, gate] = parallel.take(t[n], self.picks[gate])
                    ins.append(taken[n, gate])
                else:
                    ins.append(t[n])
            if gathered and len(ins[0]) == 0:
                out = np.zeros((0, *self.plan.tensors[op["output"]]), F32)
                self.cache[op["name"]] = None
            elif kind == "conv":
                x_q, e_x, _ = nx.quantize_tensor(ins[0], nx.ACT, np.int8)
                yq, r = self.s.conv_fwd(op, x_q)
                e = e_x + op["wq_exp"] + self.s.buffer(op, "wshift").astype(np.int64) + r
                out = nx.dequantize(yq, e.reshape(1, -1, 1, 1))
                self.cache[op["name"]] = (len(x_q), e_x)
            elif kind == "batchnorm":
                p = op["params"]
                out, xhat, invstd, mean, var = _bn_train(ins[0], self.p[p["weight"]], self.p[p["bias"]], op["eps"])
                m = ins[0].size // ins[0].shape[1]
                if m > 1:
                    mom = F32(op["momentum"])
                    self.p[p["running_mean"]] = ((1 - mom) * self.p[p["running_mean"]] + mom * mean.astype(F32)).astype(F32)
                    unbiased = (var * m / (m - 1)).astype(F32)
                    self.p[p["running_var"]] = ((1 - mom) * self.p[p["running_var"]] + mom * unbiased).astype(F32)
                self.cache[op["name"]] = (xhat, invstd)
            elif kind == "relu":
                out = hostops.relu(ins[0])
                self.cache[op["name"]] = parallel.ufunc(np.greater, ins[0], F32(0), bool)
            elif kind == "add":
                out = parallel.ufunc(np.add, ins[0], ins[1], np.result_type(ins[0], ins[1]))
            elif kind == "avgpool":
                out = hostops.avgpool(ins[0])
                self.cache[op["name"]] = ins[0].shape
            elif kind == "linear":
                xf = ins[0].reshape(len(ins[0]), -1)
                out = hostops.linear(xf, self.p[op["params"]["weight"]], self.p[op["params"]["bias"]])
                self.cache[op["name"]] = xf
            elif kind == "gate":
                out, state = self._gate_forward(op, ins[0], state)
            elif kind == "mix":
                mask, block, short = ins
                out = parallel.copy(short)
                out[self.picks[gate]] = block
                self.cache[op["name"]] = (block, short)
            elif kind == "loss":
                logits = ins[0]
                losses, self.g_logits = hostops.softmax_cross_entropy(logits, y, grad=True)
                self.logits_name = op["inputs"][0]
                out = losses.astype(F32).reshape(-1, 1)
            else:
                raise E2TError(f"training: op type '{kind}' is not known to this e2t")
            if gathered:
                sub[op["output"]] = gate
            t[op["output"]] = out
        self.t, self.sub = t, sub
        return float(losses.mean()), t[self.logits_name]

    def _gate_forward(self, op, e, state):
        p = op["params"]
        x = e.reshape(len(e), -1)
        h, c, (i, f, g, o, tc) = hostops.lstm_step(x, state, self.p[p["weight_ih"]], self.p[p["weight_hh"]],
                                                   self.p[p["bias_ih"]], self.p[p["bias_hh"]])
        prob = hostops.sigmoid(hostops.linear(h, self.p[p["proj_weight"]], self.p[p["proj_bias"]]))[:, 0]
        mask = prob > self.rng.random(len(prob)).astype(F32)
        self.picks[op["index"]] = np.flatnonzero(mask)
        self.decisions.append(mask)
        self.gate_cache[op["index"]] = (x, state, i, f, g, o, c, tc, h, prob)
        return mask.astype(F32).reshape(-1, 1), (h, c)

    # -- backward -------------------------------------------------------------------------
    def _acc_param(self, name: str, g: np.ndarray) -> None:
        self.grads[name] = self.grads.get(name, 0) + g

    def backward(self) -> None:
        grads, carry = {self.logits_name: [self.g_logits]}, None
        for op in reversed(self.plan.ops):
            kind, gate = op["type"], op.get("gate")
            if kind == "loss":
                continue
            g = _gradient_sum(grads.pop(op["output"], None))
            if g is None or (kind != "mix" and kind != "gate" and self.cache.get(op["name"], 0) is None):
                continue
            gin = self._op_backward(op, g)
            if kind == "gate":
                gin, carry = self._gate_backward(op, g, carry)
            for name, gi in zip(op["inputs"], gin):
                if gi is None:
                    continue
                if gate is not None and kind != "mix" and self.sub.get(name) != gate:
                    gi = parallel.scatter(gi, self.picks[gate], len(self.t[name]))
                grads.setdefault(name, []).append(gi)

    def _op_backward(self, op, g):
        kind, name = op["type"], op["name"]
        if kind == "conv":
            return [self._conv_backward(op, g)]
        if kind == "batchnorm":
            xhat, invstd = self.cache[name]
            p = op["params"]
            dx, dgamma, dbeta = _bn_backward(g, xhat, invstd, self.p[p["weight"]])
            self._acc_param(p["weight"], dgamma)
            self._acc_param(p["bias"], dbeta)
            return [dx]
        if kind == "relu":
            return [parallel.ufunc(np.multiply, g, self.cache[name], g.dtype)]  # with the mask: np.where branches
        if kind == "add":
            return [g, g]
        if kind == "avgpool":
            shape = self.cache[name]
            return [np.broadcast_to(g / F32(shape[2] * shape[3]), shape).astype(F32)]
        if kind == "linear":
            xf = self.cache[name]
            p = op["params"]
            g64 = g.astype(F64)
            self._acc_param(p["weight"], (g64.T @ xf.astype(F64)).astype(F32))
            self._acc_param(p["bias"], g64.sum(0).astype(F32))
            dx = (g64 @ self.p[p["weight"]].astype(F64)).astype(F32)
            return [dx.reshape(len(g), *self.plan.tensors[op["inputs"][0]])]
        if kind == "mix":
            block, short = self.cache[name]
            on = self.picks[op["gate"]]
            g_short = parallel.copy(g)
            g_short[on] = 0
            dm, g_on = np.zeros((len(g), 1), F32), parallel.take(g, on)
            if len(on):  # dL/dm of an image: its own float64 sum, the images on two threads
                sums = np.empty(len(on), F64)

                def part(i, j):
                    d = g_on[i:j].astype(F64) * (block[i:j] - short[on[i:j]])
                    sums[i:j] = d.reshape(j - i, -1).sum(1)

                parallel.halves(part, len(on), block.size)
                dm[on, 0] = sums
            return [dm, g_on, g_short]
        if kind == "gate":
            return [None]
        raise E2TError(f"training: no backward for op type '{kind}'")

    def _conv_backward(self, op, g):
        """The input gradient first, then the weight gradient, which the engine computes while
        the host goes on with the layers below (the next engine call or DDR access waits)."""
        n, e_x = self.cache[op["name"]]
        g_q, e_g, _ = nx.quantize_tensor(g, nx.GRAD, np.int16)
        self.s.set_grad(op, g_q)
        gx = None
        if op["input_grad"]:
            q, r, e_ref = self.s.conv_bwd_data(op, n)
            gx = nx.dequantize(q, e_g + op["wq_exp"] + e_ref + r)
        if self.psg is None:
            def signs():
                self.s.buffer(op, "sgn")[...] = np.sign(self.s.wgrad_result(op))
            self.s.conv_wgrad(op, n, "full", then=signs, wait=False)
        elif self.psg["ratio"] is not None:
            self.s.conv_wgrad(op, n, "ratio", nx.ratio_fixed(self.psg["ratio"]), wait=False)
        else:
            self.s.conv_wgrad(op, n, "abs", nx.threshold_abs(self.psg["tau"], e_x, e_g), wait=False)
        self.updated.add(op["name"])
        return gx

    def _gate_backward(self, op, g_mask, carry):
        """dL/dp = dL/dm (straight-through) plus the cost loss's s * beta * w_l; then back through
        the sigmoid, the output layer and the LSTM step, carrying dh, dc to the previous gate."""
        j, p = op["index"], op["params"]
        x, state, i, f, gg, o, c, tc, h, prob = self.gate_cache[j]
        dp = g_mask[:, 0].astype(F32)
        if self.slu_cost is not None:  # d(s beta sum_l w_l m_l)/dm_j, rounded as autograd rounds it
            cost = self.slu_cost
            dp = dp + F32(F32(cost["sign"] * cost["beta"]) * F32(cost["weights"][j]))
        dz = (dp * prob * (1 - prob)).reshape(-1, 1).astype(F32)
        self._acc_param(p["proj_weight"], hostops.matmul(dz.T, h))
        self._acc_param(p["proj_bias"], dz.sum(0, dtype=F64).astype(F32))
        dh = dz * self.p[p["proj_weight"]]  # (N, 1) x (1, H): one product each
        dc = np.zeros_like(c)
        if carry is not None:
            dh, dc = dh + carry[0], dc + carry[1]
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di, dg = dc * gg, dc * i
        df = dc * state[1] if state is not None else np.zeros_like(dc)
        d4 = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - gg * gg), do * o * (1 - o)], 1).astype(F32)
        self._acc_param(p["weight_ih"], hostops.matmul(d4.T, x))
        db = d4.sum(0, dtype=F64).astype(F32)
        self._acc_param(p["bias_ih"], db)
        self._acc_param(p["bias_hh"], db)
        new_carry = None
        if state is not None:
            self._acc_param(p["weight_hh"], hostops.matmul(d4.T, state[0]))
            new_carry = (hostops.matmul(d4, self.p[p["weight_hh"]]), (dc * f).astype(F32))
        dx = hostops.matmul(d4, self.p[p["weight_ih"]]).reshape(len(x), -1, 1, 1)
        return [dx], new_carry
