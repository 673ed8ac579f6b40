"""``e2t export`` (workstation): a trained run -> ONNX -> plan, and a plan -> PyTorch and ONNX.

Checkpoint to plan: the run's model becomes ``model.onnx`` (opset ``OPSET``, checked against
PyTorch with onnxruntime on real test images), and the ONNX graph, not the PyTorch object, is
read into the plan by hls/export.py's steps. PSG runs keep integer master weights; their
ONNX carries them exactly, as ``Cast(int32 mantissas) * 2^e_w`` feeding each conv. What ONNX
does not hold, the optimizer state (PSG and SGD momentum), comes from the checkpoint.

Plan to PyTorch and ONNX (a network trained on the board, deployed anywhere): see
``from_plan`` (reference/from_plan.py).
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

from contract import boards
from contract.errors import E2TError
from contract.runs import refuse_existing
from host.data.datasets import load_dataset, normalize, preprocess
from host.plan import planbuild
from host.train.config import TrainConfig

from .models import GatedResNet, build_model
from .quant import PSGConfig, QConv2d, conv_factory
from .train import CHECKPOINT, decode_checkpoint

OPSET = 17
CHECK_IMAGES = 256
# onnxruntime against PyTorch on the logits: |difference| <= RTOL * max(1, max|logit|).
# Both run float32 convolutions whose sums differ in order; 1e-4 is far above what that gives.
RTOL = 1e-4
DEFAULT_ONNX_BATCH = 128  # the plan's batch for an ONNX file of one's own without --batch


class ExportView(nn.Module):
    """The model as ONNX sees it: gates decide deterministically (p > 0.5), as at test time."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, gates="deterministic") if isinstance(self.net, GatedResNet) else self.net(x)


def read_checkpoint(src: str) -> tuple[dict, TrainConfig, str]:
    """(state, config, path) of a run folder or a checkpoint file."""
    path = os.path.join(src, CHECKPOINT) if os.path.isdir(src) else src
    if not os.path.isfile(path):
        raise E2TError(f"{src}: no {CHECKPOINT} here (give a run folder, a checkpoint or a plan folder)")
    with open(path, "rb") as f:
        state = decode_checkpoint(f.read(), path)
    return state, TrainConfig.from_dict(state["config"]), path


def trained_models(state: dict, cfg: TrainConfig, in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(the model as trained, its float twin with plain nn.Conv2d) from a checkpoint."""
    psg = PSGConfig(cfg.psg_tau, cfg.psg_ratio, *cfg.psg_tiles()) if cfg.psg else None
    slu = cfg.slu_target is not None
    model = build_model(cfg.model, num_classes, in_channels, conv=conv_factory(cfg.precision, psg), slu=slu)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise E2TError(f"checkpoint does not fit {cfg.model}: {str(e).strip().splitlines()[0]}") from None
    twin = build_model(cfg.model, num_classes, in_channels, slu=slu)
    floats = {k: v for k, v in model.state_dict().items() if not k.endswith(("w_master", "_extra_state"))}
    twin.load_state_dict(floats)
    return model.eval(), twin.eval()


def _exact_masters(model, trained: nn.Module) -> int:
    """Replace each PSG conv's float weight initializer by its int32 mantissas times 2^e_w."""
    from onnx import helper, numpy_helper, TensorProto
    inits = {t.name: t for t in model.graph.initializer}
    nodes, n = [], 0
    for name, m in trained.named_modules():
        if not (isinstance(m, QConv2d) and m.mode == "psg"):
            continue
        wname = f"net.{name}.weight"
        if wname not in inits:
            raise E2TError(f"the exported ONNX has no initializer {wname}")
        model.graph.initializer.remove(inits[wname])
        mant = numpy_helper.from_array(m.w_master.numpy().astype(np.int32), f"{wname}.mantissa")
        scale = numpy_helper.from_array(np.array(2.0 ** m.w_exp, np.float32), f"{wname}.scale")
        model.graph.initializer.extend([mant, scale])
        nodes += [helper.make_node("Cast", [mant.name], [f"{wname}.float"], to=TensorProto.FLOAT, name=f"{wname}/Cast"),
                  helper.make_node("Mul", [f"{wname}.float", scale.name], [wname], name=f"{wname}/Mul")]
        n += 1
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    return n


def to_onnx(twin: nn.Module, trained: nn.Module, in_channels: int, size: int, pre: dict | None = None) -> bytes:
    """``model.onnx``'s bytes: the float twin traced in eval mode (BatchNorm kept, not folded
    into the convs), batch dimension dynamic, PSG masters exact; ``pre`` (host/data/datasets.py's
    ``preprocess``) in its metadata."""
    import onnx
    from hls import export as hx
    buf = io.BytesIO()
    x = torch.zeros(2, in_channels, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportView(twin), (x,), buf, dynamo=False, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load_from_string(buf.getvalue())
    _exact_masters(model, trained)
    model.doc_string = "e2t export: a CIFAR ResNet (reference/models.py), BatchNorm in inference mode"
    hx.set_preprocess(model, pre)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_error(data: bytes, twin: nn.Module, images: np.ndarray) -> tuple[float, float]:
    """(max |onnxruntime - PyTorch| on the logits, the tolerance) on ``images``."""
    import onnxruntime as ort
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": images})[0]
    with torch.no_grad():
        want = ExportView(twin)(torch.from_numpy(images)).numpy()
    return float(np.abs(got - want).max()), RTOL * max(1.0, float(np.abs(want).max()))


def optimizer_state(state: dict, trained: nn.Module) -> dict[str, np.ndarray]:
    """PSG momentum (``<conv>.mom``) and SGD momentum of the host's parameters
    (``<param>.momentum_buffer``) from a checkpoint."""
    out = {}
    psg_layers = [n for n, m in trained.named_modules() if isinstance(m, QConv2d) and m.mode == "psg"]
    for name, buf in zip(psg_layers, state.get("psg", {}).get("buffers", [])):
        out[f"{name}.mom"] = buf.numpy().astype(np.int32)
    signed = {f"{n}.weight" for n in psg_layers}
    names = [n for n, p in trained.named_parameters() if n not in signed]
    for i, s in state.get("optimizer", {}).get("state", {}).items():
        if "momentum_buffer" in s and s["momentum_buffer"] is not None and int(i) < len(names):
            out[f"{names[int(i)]}.momentum_buffer"] = s["momentum_buffer"].numpy()
    return out


def export_checkpoint(src: str, board: str, out: str, batch: int | None, data_dir: str | None, log) -> dict:
    """The whole forward export; writes ``out`` only when every step passed."""
    from hls import export as hx
    state, cfg, path = read_checkpoint(src)
    b = boards.board(board)
    if batch is None and cfg.batch_size > b.max_batch:
        raise E2TError(f"the run's batch size {cfg.batch_size} exceeds {b.name}'s max_batch {b.max_batch}: give "
                       f"--batch 1..{b.max_batch}")
    ds = load_dataset(cfg.dataset, data_dir, cfg.image_size, cfg.image_channels)
    size = ds.test_x.shape[2]
    trained, twin = trained_models(state, cfg, ds.in_channels, ds.num_classes)
    start = time.perf_counter()
    data = to_onnx(twin, trained, ds.in_channels, size, preprocess(ds))
    images = normalize(ds, ds.test_x[:CHECK_IMAGES])
    err, tol = onnx_error(data, twin, images)
    log(f"e2t export: model.onnx (opset {OPSET}) against PyTorch on {len(images)} test images: max |logit error| "
        f"{err:.2e} (tolerance {tol:.2e}), {time.perf_counter() - start:.1f} s")
    if not err <= tol:
        raise E2TError(f"onnxruntime differs from PyTorch by {err:.3e} on the logits (tolerance {tol:.3e}); "
                       f"nothing was written")
    prov = {"source": "export", "checkpoint": os.path.abspath(path), "epoch": state["epoch"],
            "iteration": state["iteration"], "model": cfg.model, "config": cfg.to_dict(),
            "onnx_check": {"images": len(images), "max_abs_error": err, "tolerance": tol}}
    ex = hx.export(data, board, cfg.batch_size if batch is None else batch, cfg.dataset,
                   optimizer_state(state, trained), prov)
    return write_export(ex, out, data, log)


def write_export(ex, out: str, onnx_data: bytes, log) -> dict:
    """Write a finished export's files into ``out`` and print its summary."""
    from hls import export as hx, project
    plan = ex.ctx["plan"]
    summary = hx.summary(plan)
    extra = {"model.onnx": onnx_data, "engine_config.h": hx.config_text(plan).encode(),
             "steps.json": (json.dumps(ex.table(), indent=1) + "\n").encode(),
             "summary.txt": (hx.summary_text(summary) + "\n\n" + hx.layers_text(summary) + "\n").encode()}
    extra.update({f"hls/{k}": v for k, v in project.standalone(hx.sized_board(plan)).items()})
    extra["hls/config/engine_config.h"] = extra["engine_config.h"]
    planbuild.save(out, plan, ex.ctx["weights"], extra)
    for s in ex.steps:
        log(f"e2t export: step {s.name:<8} {1e3 * s.seconds:8.1f} ms  {json.dumps(s.summary)}")
    print(hx.summary_text(summary))
    print(f"wrote {out}: plan.json, weights.bin, model.onnx, engine_config.h, hls/, steps.json, summary.txt")
    return summary


def export_onnx_file(path: str, board: str, out: str, batch: int | None, log) -> dict:
    """An ONNX file of one's own -> plan (no checkpoint: no optimizer state, momentum zero)."""
    from hls import export as hx
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise E2TError(f"{path}: cannot read it ({e.strerror})") from None
    ex = hx.export(data, board, DEFAULT_ONNX_BATCH if batch is None else batch, "", None,
                   {"source": "onnx", "onnx": os.path.abspath(path)}, where=path)
    return write_export(ex, out, data, log)


def check_batch(batch: int | None, board: str, from_plan: bool) -> None:
    """``--batch``: 1 .. the board's max_batch, and only where it decides something (before any work)."""
    if batch is None:
        return
    if from_plan:
        raise E2TError(f"--batch {batch}: a plan is exported back with the batch it was made for; --batch sets the "
                       f"batch of a plan made from a run, a checkpoint or an .onnx")
    b = boards.board(board)
    if not 1 <= batch <= b.max_batch:
        raise E2TError(f"--batch {batch}: choose 1..{b.max_batch} (the max_batch of --board {b.name})")


def main(args) -> int:
    """The ``e2t export`` command (through the ``export`` entry point)."""
    log = (lambda m: None) if getattr(args, "quiet", False) else (lambda m: print(m, file=sys.stderr))
    refuse_existing(args.out)  # before any work; the folder is written whole at the end (planbuild.save)
    src = args.source
    is_plan = os.path.isdir(src) and os.path.isfile(os.path.join(src, "plan.json"))
    check_batch(args.batch, args.board, is_plan)
    if is_plan:
        from .from_plan import export_plan
        export_plan(src, args.out, args.data_dir, log)
    elif src.endswith(".onnx"):
        export_onnx_file(src, args.board, args.out, args.batch, log)
    else:
        export_checkpoint(src, args.board, args.out, args.batch, args.data_dir, log)
    return 0
