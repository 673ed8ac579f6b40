"""Contract v2's op table (``--elementwise engine``): the per-element work on the engine
(docs/numerics.md, sections 9 and 10), the host left with O(batch x channels).

The tensors between engine ops stay in DDR as the session's step tensors (``Ints``: int8
activations, int32 conv outputs and gradients, int16 output gradients), each with its
exponents and its per-channel range. In the forward pass BatchNorm asks the engine for its
input's exact per-channel sums (STATS) and hands on an affine map (``Affine``); a residual add
joins a second term to it; the ReLU after them runs the map, the residual and the quantization
to the next conv's int8 input in one APPLY, whose plane sums are the global average pool. In the
backward pass ReLU's APPLY masks and joins the (at most two) gradients that reach its output,
and BatchNorm's STATS PRODUCT and APPLY give the conv its int16 output gradient. The host
computes the coefficients and exponents (contract/bncoef.py) and runs the classifier and the
loss in float32; two per-element passes stay on it: the quantization of the input images and
the broadcast of the pooled gradient to the last block's pixels.

SLU: a gated block's inputs are taken for its images as int8 (activations) or int32 (a
projection's conv output under its BatchNorm) rows; the mix writes the shortcut (a projection's
BatchNorm by APPLY; an int8 shortcut shifted to the mix's exponent by the host) and puts the
block's rows in, at one exponent that the block's last APPLY is given as its least; dL/dm is each
image's exact integer sum. Backward, the block's input gradients (``Spread``: its rows in a
batch of zeros) and the shortcut's (``Masked``: the mix's gradient with the block's rows zeroed)
are not written: where the two meet, no row has both, so one APPLY of each on its own rows gives
the join; a lazy part any other join takes is written whole first. The gates' 1x1 convs run
as on contract v1 (float features in, float out). Not on contract v2: a conv whose output does
not go to BatchNorm (other than a gate's), inference's ``slu="mask"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import bncoef, numerics as nx, parallel, weightrefresh
from contract.errors import E2TError
from contract.opcount import merge_host

from . import hostops
from .hostops import passes
from .ops import OPS, Op, per_image, start_wgrad, update_running
from .trainable import EVERYTHING
from .walk import OpTable

F32, F64 = np.float32, np.float64


@dataclass
class Ints:
    """An engine tensor: step tensor ``name`` (its DDR view ``q``, n images first), per-channel
    exponents ``e``, per-channel least and greatest values ``lo``, ``hi`` (None until known),
    APPLY's plane statistics ``planes`` ([N][C][3]) where it wrote them, and ``bound`` on |q| known
    before the data (a conv output's, for its statistics shift)."""

    name: str
    q: np.ndarray
    e: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    planes: np.ndarray | None = None
    bound: int | None = None

    def __len__(self) -> int:
        return len(self.q)

    @property
    def exponent(self) -> int:
        """The per-tensor exponent (activations and gradients have one)."""
        return int(self.e[0])

    def box(self) -> np.ndarray:
        """Each channel's (least, greatest) value, C x 2."""
        return np.stack([self.lo, self.hi], 1)


@dataclass
class Affine:
    """BatchNorm's output, not yet written: ``sum m_i * term_i + b0`` per channel (real values of
    the terms' integers), at most two terms, the first int32."""

    terms: list
    b0: np.ndarray

    def __len__(self) -> int:
        return len(self.terms[0][0])


class GradSum(list):
    """The gradients that reach one tensor, summed by the APPLY that takes them."""

    def __len__(self) -> int:
        return len(self[0]) if list.__len__(self) else 0


class _Lazy:
    """A gradient part not yet written (``Spread``, ``Masked``): the exponents of the Ints ``of`` it
    takes its rows from, and that Ints' range with 0 taken in (its other rows are 0)."""

    of: Ints

    @property
    def e(self) -> np.ndarray:
        return self.of.e

    @property
    def exponent(self) -> int:
        return self.of.exponent

    def box(self) -> np.ndarray:
        return np.stack([np.minimum(self.of.lo, 0), np.maximum(self.of.hi, 0)], 1)


@dataclass
class Spread(_Lazy):
    """A gated block's input gradient ``rows`` (an Ints of its images) in a batch of ``n``: its
    rows at the sorted ``picks``, 0 in the others. Not written: a join with the mix's shortcut
    gradient (``Masked``) reads the rows where they are, any other join has it written whole."""

    rows: Ints
    picks: np.ndarray
    n: int

    def __len__(self) -> int:
        return self.n

    @property
    def of(self) -> Ints:
        return self.rows


@dataclass
class Masked(_Lazy):
    """A mix's gradient ``full`` (an Ints of the whole batch) as its shortcut gets it: 0 in the
    rows at ``picks`` (the images the block took). Not written, as ``Spread``."""

    full: Ints
    picks: np.ndarray

    def __len__(self) -> int:
        return len(self.full)

    @property
    def of(self) -> Ints:
        return self.full


KEEP = {"relu": 2, "batchnorm": 1, "mix": 1}  # the gradients the op's backward takes in its last APPLY (_reduce)


def join_steps(kinds: tuple, keep: int) -> list[tuple]:
    """How an op's backward joins the gradient parts ``kinds`` (``part_kind``'s; ``_reduce`` two at a
    time to ``keep``, then ReLU's masked join of the rest): ("apart", k, last) for a Masked and a
    Spread of one gate's k images, ("whole", kind) for a part written whole (an Ints: as it is),
    ("join", sources, last) for an APPLY of one or two whole parts; ``last``: ReLU's masked join."""
    steps, parts = [], list(kinds)

    def join(two: list, last: bool) -> None:
        if len(two) == 2 and {two[0][0], two[1][0]} == {"masked", "spread"} and two[0][1] == two[1][1]:
            steps.append(("apart", two[0][1], last))
        else:
            steps.extend(("whole", p) for p in two)
            steps.append(("join", len(two), last))

    while len(parts) > keep:
        join(parts[:2], False)
        parts = [("ints",)] + parts[2:]
    if keep == 2 and parts:
        join(parts, True)
    elif parts:
        steps.append(("whole", parts[0]))
    return steps


def part_kind(part) -> tuple:
    """What a gradient part is, for the host's count: ("ints",), ("spread", k) or ("masked", k)."""
    if isinstance(part, _Lazy):
        return ("spread" if isinstance(part, Spread) else "masked", len(part.picks))
    return ("ints",)


def _planes_box(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel least and greatest of an APPLY output from its plane statistics."""
    return planes[:, :, 1].min(0), planes[:, :, 2].max(0)


def _written(s, name: str, dtype, shape: tuple, n: int, e: int, planes: np.ndarray) -> Ints:
    """The Ints an APPLY wrote to step tensor ``name`` at exponent ``e``."""
    lo, hi = _planes_box(planes)
    return Ints(name, s.tensor(name, dtype, shape, n), np.full(shape[0], e, np.int64), lo, hi, planes)


def _aligned(parts: list) -> tuple:
    """(m1, m2) of gradients at their per-tensor exponents joined by one APPLY."""
    c = len(parts[0].e)
    m = [np.full(c, np.ldexp(1.0, p.exponent)) for p in parts]
    return m[0], m[1] if len(m) > 1 else np.zeros(c)


def _whole(w, part) -> Ints:
    """A gradient part written whole: a Spread's rows into zeros, a Masked's others with its
    picked rows zeroed (each row written once)."""
    if not isinstance(part, _Lazy):
        return part
    name, v = _name(part), part.of
    src, fill = (None, v.q) if isinstance(part, Spread) else (v.q, 0)
    buf = w.layers.tensor(name, v.q.dtype, v.q.shape[1:], len(part))
    for i, j in _others(part.picks, len(part)):
        buf[i:j] = 0 if src is None else src[i:j]
    buf[part.picks] = fill
    lo, hi = part.box().T
    return Ints(name, buf, v.e, lo, hi)


def _apart(w, op, parts: list, e: int, coef: np.ndarray, shift: int, out: str, mask: Ints | None) -> Ints:
    """The join of a Masked and a Spread of the same picks, which no row has both of: an APPLY of
    the Masked's whole gradient with its multiplier (right in the rows it does not zero) and one
    of the Spread's rows with theirs, put in at the picks. The same integers, planes and
    saturations as the APPLY of both written whole: a row's missing term is 0."""
    s, i_m = w.layers, 0 if isinstance(parts[0], Masked) else 1
    masked, spread = parts[i_m], parts[1 - i_m]

    def alone(i: int) -> np.ndarray:  # part i's multiplier as the first source's, the offset kept
        one = np.zeros_like(coef)
        one[:, 0], one[:, 2] = coef[:, i], coef[:, 2]
        return one

    shape, n, k = masked.full.q.shape[1:], len(masked), len(spread.picks)
    buf = s.tensor(out, np.int32, shape, n)
    planes = s.apply(op, "bwd_data", n, masked.full.name, alone(i_m), shift, out, mask=mask.name if mask else None)
    rows_mask = None
    if mask is not None:
        rows_mask = f"{mask.name}.rows"
        np.take(mask.q, spread.picks, axis=0, out=s.tensor(rows_mask, np.int8, shape, k))
    rows = f"{out}.rows"
    s.tensor(rows, np.int32, shape, k)
    planes[spread.picks] = s.apply(op, "bwd_data", k, spread.rows.name, alone(1 - i_m), shift, rows, mask=rows_mask)
    buf[spread.picks] = s.tensor(rows, np.int32, shape, k)
    return _written(s, out, np.int32, shape, n, e, planes)


def _join(w, op, parts: list, out: str, mask: Ints | None = None) -> Ints:
    """One or two gradients at their exponents added by an APPLY (``mask``: 0 where it is <= 0)
    into int32 step tensor ``out``, at the exponent their ranges need; a Masked and a Spread of
    the same picks by ``_apart``, other lazy parts written whole first."""
    s, (a, b) = w.layers, (parts + [None])[:2]
    m1, m2 = _aligned(parts)
    e, coef, shift = bncoef.apply_plan(m1, m2, np.zeros(len(m1)), nx.OUT, a.box(), b.box() if b else None)
    if {type(a), type(b)} == {Masked, Spread} and np.array_equal(a.picks, b.picks):
        return _apart(w, op, parts, e, coef, shift, out, mask)
    a, b = _whole(w, a), _whole(w, b) if b else None
    shape, n = a.q.shape[1:], len(a)
    s.tensor(out, np.int32, shape, n)
    planes = s.apply(op, "bwd_data", n, a.name, coef, shift, out, b=b.name if b else None,
                     mask=mask.name if mask else None)
    return _written(s, out, np.int32, shape, n, e, planes)


def _reduce(w, op, g, keep: int) -> list:
    """The gradients ``g`` (one part or a GradSum) joined two at a time (``_join``) until at most
    ``keep`` remain (one of them written whole where ``keep`` is 1)."""
    parts = list(g) if isinstance(g, GradSum) else [g]
    while len(parts) > keep:
        parts = [_join(w, op, parts[:2], f"{_name(parts[0])}.join")] + parts[2:]
    return [_whole(w, parts[0])] if keep == 1 else parts


def _name(part) -> str:
    """The name of a part's step tensor (a lazy part's where it is written whole)."""
    if isinstance(part, _Lazy):
        return f"{part.of.name}.{'scatter' if isinstance(part, Spread) else 'short'}"
    return part.name


def _shortcut_exponent(short) -> int:
    """The exponent a mix's shortcut takes in int8: an int8 tensor's own, a BatchNorm's (Affine)
    the one its range needs."""
    if isinstance(short, Ints):
        return short.exponent
    (a, m1), = short.terms
    return bncoef.apply_plan(m1, np.zeros(len(m1)), short.b0, nx.ACT, a.box())[0]


def _mix_after(plan, tensor: str) -> dict | None:
    """The mix op whose block output is ``tensor``, if any."""
    return next((op for op in plan.ops if op["type"] == "mix" and op["inputs"][1] == tensor), None)


def _box_work(n: int, c: int) -> dict:
    """A plane-statistics reduction: the least of the minima and the greatest of the maxima."""
    return passes(n * c, (8, 0, 1, "int"), (8, 0, 1, "int"))


def _others(picks: np.ndarray, n: int) -> list:
    """The runs [i, j) of the rows of a batch of ``n`` that the sorted ``picks`` leave out."""
    left = np.zeros(n + 2, np.int8)
    left[1:-1] = 1
    left[np.asarray(picks) + 1] = 0
    edges = np.flatnonzero(np.diff(left))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _shifted_shortcut(short: Ints, shift: int, buf: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """An int8 shortcut rounded half up by ``shift`` >= 0 bits into ``buf``, and its plane
    statistics ([N][C][3]) on the rows the block's ``picks`` leave (theirs are the block's).
    The least and greatest follow from the shortcut's own (rounding by a shift is monotone), the
    sums are taken anew where the shift is not 0; int16 holds every step (|q| + 2^8 < 2^15)."""
    n, c = short.q.shape[:2]
    if shift == 0:
        buf[...] = short.q
    else:
        np.right_shift(short.q.astype(np.int16) + ((1 << shift) >> 1), shift, out=buf, casting="unsafe")
    if short.planes is None:
        flat = buf.reshape(n, c, -1)
        return np.stack([flat.sum(2, dtype=np.int64), flat.min(2), flat.max(2)], 2).astype(np.int64)
    planes = short.planes.copy()
    if shift:
        planes[:, :, 1:] = (planes[:, :, 1:] + ((1 << shift) >> 1)) >> shift
        for i, j in _others(picks, n):
            planes[i:j, :, 0] = buf[i:j].reshape(j - i, c, -1).sum(2, dtype=np.int64)
    return planes


class IntConv(Op):
    """CONV_FWD on the int8 step tensor of its input (the images, quantized by the host, for the
    stem) into an int32 step tensor; backward, CONV_BWD_DATA of BatchNorm's int16 gradient into
    an int32 step tensor and CONV_WGRAD as on contract v1."""

    def forward(self, w, op, ins):
        if op["role"] == "gate":  # a gate's 1x1 conv: float features in, float out (contract v1)
            return OPS["conv"].forward(w, op, ins)
        s, x = w.layers, ins[0]
        n = len(x)
        if isinstance(x, np.ndarray):  # the images: quantized here
            q, e_x, _ = nx.quantize_tensor(x, nx.ACT, np.int8)
            name = f"{op['inputs'][0]}.q"
            buf = s.tensor(name, np.int8, x.shape[1:], n)
            buf[...] = q
            x = Ints(name, buf, np.full(x.shape[1], e_x, np.int64))
        elif x.q.dtype != np.int8:
            raise E2TError(f"{op['name']}: contract v2 takes an int8 input (a ReLU's output), not {x.q.dtype}")
        out = f"{op['output']}.y"
        s.tensor(out, np.int32, (op["c_out"], op["ho"], op["wo"]), n)
        y, r = s.conv_fwd(op, None, n=n, act=x.name, out=out)
        if w.record is not None:
            w.record[op["name"]] = y
        e = x.exponent + op["wq_exp"] + s.buffer(op, "wshift").astype(np.int64) + r
        w.cache[op["name"]] = (n, x)
        return Ints(out, y, e, bound=int(nx.rshift_round(s.weight_bounds(op)[0], r)))

    def backward(self, w, op, g):
        if op["role"] == "gate":
            return OPS["conv"].backward(w, op, g)
        s = w.layers
        n, x = w.cache[op["name"]]
        if not isinstance(g, Ints) or g.q.dtype != np.int16:
            raise E2TError(f"{op['name']}: contract v2 needs BatchNorm after every conv (its gradient arrives as "
                           f"{type(g).__name__})")
        e_g, gx = g.exponent, None
        if op["input_grad"] and w.trainable.wants(op["inputs"][0]):
            out = f"{op['inputs'][0]}.g.{op['name']}"
            s.tensor(out, np.int32, (op["c_in"], op["h"], op["w"]), n)
            g_range = (int(g.lo.min()), int(g.hi.max()))
            q, r, e_ref = s.conv_bwd_data(op, n, grad=g.name, out=out, g_range=g_range)
            bound = max(-g_range[0], g_range[1]) * s.weight_bounds(op)[1]
            top = np.full(op["c_in"], int(nx.rshift_round(bound, r)), np.int64)
            gx = Ints(out, q, np.full(op["c_in"], e_g + op["wq_exp"] + e_ref + r, np.int64), -top, top)
        if w.trainable.trains(op):
            start_wgrad(w, op, n, x.exponent, e_g, act=x.name, grad=g.name)
        return [gx]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: the stem's images quantized and stored; bwd_data: without PSG the signs of G_full
        (the bounds come from the weights' kept bounds and the gradient's known range); update: the
        weights' refresh on the engine and its O(channels) rules (the host's refresh where the engine
        cannot take the layer: contract/weightrefresh.py). A gate's conv: contract v1's, but its refresh."""
        if phase == "update" and trainable.trains(op) and weightrefresh.views(op, plan.board):
            return hostops.refresh_on_engine_work(op["c_out"], op["c_in"])
        if op["role"] == "gate" or phase == "update":  # (an update: the host's refresh, as contract v1's)
            return OPS["conv"].work(plan, op, n, phase, psg=psg, on=on, trainable=trainable)
        if phase == "fwd":
            if op["inputs"][0] != plan.data["input"]:
                return {}
            x = n * op["c_in"] * op["h"] * op["w"]
            return merge_host(hostops.quantize_work(x, 1), passes(x, (1, 1, 0, "int")))
        trains = trainable.trains(op)
        return hostops.signs_work(op["c_out"] * op["c_in"] * op["k"] ** 2) if not psg and trains else {}


class IntBatchNorm(Op):
    """STATS SQUARE of the conv's int32 output (in inference too: its range sets the next
    exponent), the batch statistics and the running ones (training) or the running ones
    (inference) into an Affine; backward, STATS PRODUCT of the gradient and the input, the
    parameter gradients, and APPLY of ``p g + q y + r`` to int16."""

    def forward(self, w, op, ins):
        s, y, p = w.layers, ins[0], op["params"]
        if not isinstance(y, Ints) or y.bound is None:
            raise E2TError(f"{op['name']}: contract v2 takes BatchNorm right after a conv")
        n = len(y)
        t = bncoef.stat_shift(y.bound)
        st = s.stats(op, "fwd", n, y.name, t)
        y.lo, y.hi = st[:, 2], st[:, 3]
        gamma, beta = w.p[p["weight"]], w.p[p["bias"]]
        if not w.training:
            inv = 1.0 / np.sqrt(w.p[p["running_var"]].astype(F64) + op["eps"])
            m1 = gamma.astype(F64) * inv
            return Affine([(y, m1 * np.ldexp(1.0, y.e))], beta.astype(F64) - m1 * w.p[p["running_mean"]].astype(F64))
        m = y.q.size // y.q.shape[1]
        f = bncoef.bn_forward(st, t, m, y.e, gamma, beta, op["eps"])
        update_running(w, op, f["mean"], f["var"], m)
        w.cache[op["name"]] = (y, t, f, m)
        return Affine([(y, f["m1"])], f["b0"])

    def backward(self, w, op, g):
        s, p = w.layers, op["params"]
        y, t, f, m = w.cache[op["name"]]
        (g,) = _reduce(w, op, g, 1)  # a projection's BatchNorm: its block's add and the mix
        n = len(y)
        tg = bncoef.stat_shift(max(-int(g.lo.min()), int(g.hi.max())))
        st = s.stats(op, "bwd_data", n, g.name, tg, b=y.name, u=t)
        gamma = w.p[p["weight"]]
        b = bncoef.bn_backward(st, tg, t, m, g.exponent, y.e, f, gamma)
        if w.trainable.trains(op):
            w.acc(p["weight"], b["dgamma"].astype(F32))
            w.acc(p["bias"], b["dbeta"].astype(F32))
        if not w.trainable.wants(op["inputs"][0]):
            return [None]
        e, coef, shift = bncoef.apply_plan(b["p"], b["q"], b["r"], nx.GRAD, st[:, 2:4], y.box())
        out, shape = f"{y.name}.g16", y.q.shape[1:]
        s.tensor(out, np.int16, shape, n)
        return [_written(s, out, np.int16, shape, n, e, s.apply(op, "bwd_data", n, g.name, coef, shift, out, b=y.name))]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """The coefficient rules (hostops.bncoef_work): fwd, the batch statistics; bwd_data, the
        backward's and, where the input gets a gradient, its APPLY's plan."""
        c = plan.tensors[op["output"]][0]
        if phase == "fwd":
            return hostops.bncoef_work(c, "bn_forward")
        if phase != "bwd_data":
            return {}
        return merge_host(hostops.bncoef_work(c, "bn_backward"),
                          hostops.bncoef_work(c, "apply_plan") if trainable.wants(op["inputs"][0]) else {})


class IntAdd(Op):
    """The residual add: the two Affines' terms (or an int8 shortcut's) joined, nothing run."""

    def forward(self, w, op, ins):
        terms, b0 = [], 0.0
        for v in ins:
            if isinstance(v, Affine):
                terms += v.terms
                b0 = b0 + v.b0
            elif isinstance(v, Ints) and v.q.dtype == np.int8:
                terms.append((v, np.ldexp(1.0, v.e)))
            else:
                raise E2TError(f"{op['name']}: contract v2 adds BatchNorm outputs and int8 shortcuts only")
        terms.sort(key=lambda term: term[0].q.dtype != np.int32)
        if len(terms) > 2 or terms[0][0].q.dtype != np.int32:
            raise E2TError(f"{op['name']}: contract v2's APPLY joins one int32 term and at most one more")
        return Affine(terms, b0)

    def backward(self, w, op, g):
        return [g, g]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        return {}


class IntReLU(Op):
    """APPLY of the Affine before it, ReLU and the int8 quantization at the exponent its range
    allows; backward, APPLY of the gradients that reach its output (at most two, aligned),
    masked where the output is 0, into an int32 step tensor."""

    def forward(self, w, op, ins):
        s, v = w.layers, ins[0]
        if not isinstance(v, Affine):
            raise E2TError(f"{op['name']}: contract v2 runs ReLU after BatchNorm (or a residual add)")
        (a, m1), second = v.terms[0], v.terms[1] if len(v.terms) > 1 else None
        n, shape = len(a), a.q.shape[1:]
        m2 = second[1] if second else np.zeros(len(m1))
        e, coef, shift = bncoef.apply_plan(m1, m2, v.b0, nx.ACT, a.box(), second[0].box() if second else None, relu=True)
        mix = _mix_after(w.plan, op["output"])
        if mix is not None:  # a gated block's output: at least its shortcut's exponent, the mix's
            least = _shortcut_exponent(w.t[mix["inputs"][2]])
            if e < least:
                e, (coef, shift) = least, bncoef.coefficients(m1, m2, v.b0, least)
        out = f"{op['output']}.q"
        s.tensor(out, np.int8, shape, n)
        planes = s.apply(op, "fwd", n, a.name, coef, shift, out, b=second[0].name if second else None, relu=True)
        z = _written(s, out, np.int8, shape, n, e, planes)
        w.cache[op["name"]] = z
        return z

    def backward(self, w, op, g):
        return [_join(w, op, _reduce(w, op, g, 2), f"{op['inputs'][0]}.g", mask=w.cache[op["name"]])]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """Its APPLY's plan (hostops.bncoef_work; a gated block's output also its shortcut's
        exponent: a BatchNorm's is an APPLY plan) and the per-channel range from the plane statistics."""
        c = plan.tensors[op["output"]][0]
        if phase == "fwd":
            mix = _mix_after(plan, op["output"])
            short = mix is not None and plan_producer(plan, mix["inputs"][2]) == "batchnorm"
            return merge_host(hostops.bncoef_work(c, "apply_plan, relu"), _box_work(n, c),
                              hostops.bncoef_work(c, "apply_plan") if short else {})
        return merge_host(hostops.bncoef_work(c, "apply_plan"), _box_work(n, c)) if phase == "bwd_data" else {}


class IntAvgPool(Op):
    """The pooled features from the last APPLY's plane sums (float64, rounded once); backward,
    the pooled gradient divided by the pixels, quantized to int32 and broadcast to every pixel
    of an int32 step tensor (a per-element pass the host still makes)."""

    def forward(self, w, op, ins):
        x = ins[0]
        if not isinstance(x, Ints) or x.planes is None:
            raise E2TError(f"{op['name']}: contract v2 pools a ReLU's output")
        n, c, h, wd = x.q.shape
        w.cache[op["name"]] = x
        return (np.ldexp(x.planes[:, :, 0].astype(F64), x.exponent) / (h * wd)).astype(F32).reshape(n, c, 1, 1)

    def backward(self, w, op, g):
        x = w.cache[op["name"]]
        n, c, h, wd = x.q.shape
        gv = g.reshape(n, c).astype(F64) / (h * wd)
        e = nx.exponent_for(float(np.abs(gv).max(initial=0.0)), nx.OUT)
        q = np.floor(np.ldexp(gv, -e) + 0.5).astype(np.int64)
        name = f"{op['inputs'][0]}.g.pool"
        buf = w.layers.tensor(name, np.int32, (c, h, wd), n)
        buf[...] = q.astype(np.int32).reshape(n, c, 1, 1)  # |q| < 2^31: OUT's range
        return [Ints(name, buf, np.full(c, e, np.int64), q.min(0), q.max(0))]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: the plane sums scaled and rounded; bwd_data: g / (h w), its quantization, its int32
        cast, the broadcast."""
        c, h, wd = plan.tensors[op["inputs"][0]]
        if phase == "fwd":
            return passes(n * c, (8, 8, 0, "f64"), (8, 8, 1, "f64"), (8, 8, 1, "f64"), (8, 4, 0, "f64"))
        if phase != "bwd_data":
            return {}
        return merge_host(passes(n * c, (4, 8, 0, "f64"), (8, 8, 1, "f64"), (8, 0, 1, "f64"), (8, 8, 1, "f64"),
                                 (8, 8, 1, "f64"), (8, 8, 0, "int"), (8, 0, 1, "int"), (8, 0, 1, "int"), (8, 4, 0, "int")),
                          passes(n * c * h * wd, (0, 4, 0, "int")))


class IntMix(Op):
    """A gated block's output joined with its shortcut at one exponent (the block's, which is at
    least the shortcut's): the shortcut written whole (a BatchNorm's by APPLY, an int8 one shifted
    by the host), the block's images put in; backward, the gradient's rows for the block, a copy
    with them zeroed for the shortcut, and dL/dm per image as an exact integer sum."""
    gathered = False

    def forward(self, w, op, ins):
        if w.slu != "gather":
            raise E2TError(f"{op['name']}: contract v2 runs a gated block on its images only (slu gather)")
        s, (mask, block, short) = w.layers, ins
        picks, n, shape = w.picks[op["gate"]], len(mask), tuple(w.plan.tensors[op["output"]])
        k, out = len(picks), f"{op['output']}.q"
        e = block.exponent if k else _shortcut_exponent(short)
        buf = s.tensor(out, np.int8, shape, n)
        if isinstance(short, Affine):
            (a, m1), = short.terms
            coef, shift = bncoef.coefficients(m1, np.zeros(len(m1)), short.b0, e)
            planes = s.apply(op, "fwd", n, a.name, coef, shift, out)
        else:
            planes = _shifted_shortcut(short, min(e - short.exponent, 9), buf, picks)
        kept = np.take(buf, picks, axis=0)  # the shortcut of the block's images, for dL/dm
        if k:
            buf[picks] = block.q
            planes[picks] = block.planes
        w.cache[op["name"]] = (block if k else None, kept, e)
        return Ints(out, buf, np.full(shape[0], e, np.int64), *_planes_box(planes), planes)

    def backward(self, w, op, g):
        s, (block, kept, e) = w.layers, w.cache[op["name"]]
        picks = w.picks[op["gate"]]
        into_mask, into_block, into_short = map(w.trainable.wants, op["inputs"])
        (g,) = _reduce(w, op, g, 1)
        n, k, shape = len(g), len(picks), g.q.shape[1:]
        g_on, g_short = None, Masked(g, picks) if into_short else None
        if k and (into_block or into_mask):
            buf = s.tensor(f"{g.name}.on", np.int32, shape, k)
            np.take(g.q, picks, axis=0, out=buf)
            g_on = Ints(f"{g.name}.on", buf, g.e, g.lo, g.hi)
        if not into_mask:
            return [None, g_on if into_block else None, g_short]
        dm = np.zeros((n, 1), F32)
        if k:  # sum over an image of g (block - shortcut): |g| < 2^31, |difference| < 2^8, below 2^55 summed
            diff = np.subtract(block.q, kept, dtype=np.int16).reshape(k, -1)
            sums = np.einsum("ij,ij->i", g_on.q.reshape(k, -1), diff, dtype=np.int64)
            dm[picks, 0] = np.ldexp(sums.astype(F64), g.exponent + e)
        return [dm, g_on if into_block else None, g_short]

    def work(self, plan, op, n, phase, *, psg=True, on=None, trainable=EVERYTHING):
        """fwd: an int8 shortcut shifted (int16: cast, round, shift into int8; counted so, though
        a shift of 0 is a copy), its plane statistics from the shortcut's (the least and greatest
        shifted, the sums of the rows the block leaves), the shortcut's rows of the block's images
        kept, the block's rows put in; bwd_data: its block rows taken, dL/dm's difference, products
        and sums."""
        size, k = per_image(plan, op["output"]), n if on is None else on
        c = plan.tensors[op["output"]][0]
        if phase == "fwd":
            parts = [passes(k * size, (1, 1, 0, "int"), (1, 1, 0, "int")), passes(k * c, (24, 24, 0, "int"))]
            if plan_producer(plan, op["inputs"][2]) == "batchnorm":  # its exponent's plan and coefficients
                parts.append(hostops.bncoef_work(c, "apply_plan"))
            else:
                parts += [passes(n * size, (1, 2, 0, "int"), (2, 2, 1, "int"), (2, 1, 1, "int")),
                          passes(n * c, (24, 24, 0, "int"), (16, 16, 2, "int")), passes((n - k) * size, (1, 0, 1, "int"))]
            return merge_host(*parts)
        if phase != "bwd_data":
            return {}
        into_mask, into_block, into_short = map(trainable.wants, op["inputs"])
        parts = []  # the shortcut's gradient is a Masked: written where it is joined (IntTable.parts_work)
        if k and (into_block or into_mask):
            parts.append(passes(k * size, (4, 4, 0, "int")))
        if k and into_mask:
            parts.append(passes(k * size, (2, 2, 1, "int"), (6, 0, 2, "int")))  # the difference; einsum's products and sums
        return merge_host(*parts)


def plan_producer(plan, tensor: str) -> str | None:
    """The type of the op that makes ``tensor`` (None for the input)."""
    return next((op["type"] for op in plan.ops if op["output"] == tensor), None)


BYTES = {"relu": 1, "mix": 1}  # int8 step tensors by producer; conv outputs and BatchNorms' int32 (4)


class IntTable(OpTable):
    """Contract v2's rules around its ops: the gradients reaching a tensor join in the APPLY that
    takes them; a gated block's inputs are taken as int8 / int32 rows into step tensors, its
    input gradients scattered back as Spreads (written where they are joined)."""

    kind_of = staticmethod(part_kind)

    def gradient_sum(self, parts):
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else GradSum(parts)

    def gradient_sum_work(self, parts, size):
        return {}

    def take(self, w, name, value, picks):
        if isinstance(value, np.ndarray):
            return parallel.take(value, picks)
        if not len(picks):
            return np.zeros((0, *w.plan.tensors[name]), F32)
        if isinstance(value, Affine):
            return Affine([(self._rows(w, v, picks), m) for v, m in value.terms], value.b0)
        return self._rows(w, value, picks)

    @staticmethod
    def _rows(w, v: Ints, picks) -> Ints:
        name = f"{v.name}.take"
        buf = w.layers.tensor(name, v.q.dtype, v.q.shape[1:], len(picks))
        np.take(v.q, picks, axis=0, out=buf)
        planes = v.planes[picks] if v.planes is not None else None
        lo, hi = _planes_box(planes) if planes is not None else (v.lo, v.hi)
        return Ints(name, buf, v.e, lo, hi, planes, v.bound)

    def take_work(self, plan, name, k):
        b = BYTES.get(plan_producer(plan, name), 4)
        return passes(k * per_image(plan, name), (b, b, 0, "int"))

    def scatter(self, w, name, value, picks, n):
        if isinstance(value, np.ndarray):
            return parallel.scatter(value, picks, n)
        return Spread(value, picks, n)

    def scatter_work(self, plan, name, k, n):
        return {}  # a Spread is written where it is joined (parts_work)

    def part_kind(self, op, index: int, spread: bool, on: int | None) -> tuple:
        """The part that input ``index`` of ``op`` gets (``spread``: scattered from the op's gated
        block, ``on``: its gate's images): a Spread, a mix's shortcut's Masked, or an Ints."""
        if spread:
            return ("spread", on)
        return ("masked", on) if op["type"] == "mix" and index == 2 else ("ints",)

    def parts_work(self, plan, op, kinds: tuple, n: int) -> dict:
        """The host's work on the lazy parts ``kinds`` (``part_kind``) that reach ``op``'s output as
        its backward joins them (``join_steps``): a Masked and a Spread joined apart (the Spread's
        rows put in with their planes; in ReLU's masked join the mask's rows taken), a lazy part
        written whole (a Spread: the others zeroed, its rows put in; a Masked: the others copied,
        the picked rows zeroed)."""
        size, c, work = per_image(plan, op["output"]), plan.tensors[op["output"]][0], []
        for step in join_steps(kinds, KEEP.get(op["type"], 1)):
            if step[0] == "apart":
                k = step[1]
                work += [passes(k * size, (4, 4, 0, "int")), passes(k * c, (24, 24, 0, "int"))]
                if step[2]:
                    work.append(passes(k * size, (1, 1, 0, "int")))
            elif step[0] == "whole" and step[1][0] != "ints":
                k, spread = step[1][1], step[1][0] == "spread"
                work += [passes((n - k) * size, (0 if spread else 4, 4, 0, "int")),
                         passes(k * size, (4 if spread else 0, 4, 0, "int"))]
        return merge_host(*work)


INT_OPS = IntTable({**OPS, "conv": IntConv(), "batchnorm": IntBatchNorm(), "add": IntAdd(), "relu": IntReLU(),
                    "avgpool": IntAvgPool(), "mix": IntMix()})
