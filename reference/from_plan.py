"""``e2t export PLAN_DIR``: a plan and its weights.bin (trained on the board, or any plan) back
to a PyTorch checkpoint and an inference ``model.onnx``, so the network runs anywhere.

The checkpoint is the reference trainer's (``--precision fixed --psg``: integer master weights,
their sign-momentum buffers, BatchNorm, classifier and gates with their SGD momentum); the
ONNX model computes the engine's fixed-point forward (hls/plan_onnx.py). Both are checked on
the test set against the host's own evaluation of the plan on the engine's fast CPU build.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from contract.errors import E2TError
from contract.runs import write_folder
from host.data.datasets import load_dataset, normalize, preprocess
from host.plan import planbuild, schema as planmod, weightsfile
from host.train import forward
from contract.models import MODELS
from host.train.config import TrainConfig

from .models import build_model
from .quant import PSGConfig, PSGUpdater, conv_factory
from .train import encode_checkpoint, evaluate


def plan_config(plan: planmod.Plan) -> TrainConfig:
    """The reference trainer's config for a plan: its source run's, in fixed point with PSG."""
    saved = plan.data.get("provenance", {}).get("config")
    gated = plan.network["gates"] > 0
    cfg = TrainConfig.from_dict(saved) if saved else TrainConfig(model=plan.network["model"])
    return dataclasses.replace(cfg, model=plan.network["model"], dataset=plan.network["dataset"] or cfg.dataset,
                               batch_size=plan.batch, precision="fixed", psg=True,
                               slu_target=(cfg.slu_target or 0.5) if gated else None, predictive_forward=False)


def model_from_plan(plan: planmod.Plan, arrays: dict) -> tuple[torch.nn.Module, dict]:
    """(the reference model holding the plan's weights, its trainer checkpoint)."""
    net = plan.network
    if net["model"] not in MODELS:
        raise E2TError(f"plan network '{net['model']}' is not a reference model ({', '.join(MODELS)}): "
                       f"only its inference ONNX can be written")
    cfg = plan_config(plan)
    psg_cfg = PSGConfig(cfg.psg_tau, cfg.psg_ratio, *cfg.psg_tiles())
    model = build_model(cfg.model, net["num_classes"], net["in_channels"], conv=conv_factory("fixed", psg_cfg),
                        slu=net["gates"] > 0)
    host = planbuild.host_params(plan.ops, arrays)
    with torch.no_grad():
        for op in plan.ops:
            if op["type"] == "conv":
                m = model.get_submodule(op["name"])
                m.set_master(torch.from_numpy(arrays[f"{op['name']}.master"].astype(np.int64)), op["w_exp"])
        params = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, value in host:
            if name.endswith(".momentum_buffer"):
                continue
            if name not in params or tuple(params[name].shape) != value.shape:
                raise E2TError(f"plan parameter {name} {list(value.shape)} has no place in {cfg.model}")
            params[name].copy_(torch.from_numpy(value))
    updater = PSGUpdater(model, cfg.weight_decay, cfg.momentum)
    names = {id(m): n for n, m in model.named_modules()}
    for m in updater.layers:
        updater.buffers[id(m)] = torch.from_numpy(arrays[f"{names[id(m)]}.mom"].astype(np.int64))
    signed = {id(p) for p in updater.parameters()}
    trainable = [(n, p) for n, p in model.named_parameters() if id(p) not in signed]
    opt = torch.optim.SGD([p for _, p in trainable], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    buffers = dict(host)
    for n, p in trainable:
        if f"{n}.momentum_buffer" in buffers:
            opt.state[p]["momentum_buffer"] = torch.from_numpy(buffers[f"{n}.momentum_buffer"].copy())
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "psg": updater.state_dict(),
             "epoch": 0, "iteration": 0, "config": cfg.to_dict()}
    return model.eval(), state


def _accuracy(sess, x: np.ndarray, y: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    preds = np.concatenate([sess.run(None, {"images": x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).mean()), preds


def export_plan(src: str, out: str, data_dir: str | None, log) -> dict:
    """Write ``out/checkpoint.pt``, ``out/model.onnx`` and ``out/eval.json``; returns the figures."""
    import onnxruntime as ort
    from hls import csim, plan_onnx
    plan = planmod.load(src)
    arrays = weightsfile.read(src, plan)
    net, saved = plan.network, plan.data.get("provenance", {}).get("config", {})
    ds = load_dataset(net["dataset"], data_dir, saved.get("image_size"), saved.get("image_channels")) \
        if net["dataset"] else None
    pre = net.get("preprocess")
    if ds is not None and pre is not None:  # the test images normalized as in training
        ds = dataclasses.replace(ds, mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    elif ds is not None:  # an older plan: its data set's normalization
        pre = preprocess(ds)
    data = plan_onnx.build(plan, arrays, pre)
    files = {"model.onnx": data}
    figures = {"plan": src, "batch": plan.batch, **({"preprocess": pre} if pre is not None else {})}
    if ds is not None:
        x, y = normalize(ds, ds.test_x), ds.test_y
        host = forward.evaluate(plan, arrays, x, y, csim.Engine("fast", plan.board.name, log=log))
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        acc, preds = _accuracy(sess, x, y, plan.batch)
        figures.update(images=len(y), host_acc=host["test_acc"], onnx_acc=acc,
                       differing_predictions=int((preds != host["predictions"]).sum()))
        log(f"e2t export: {len(y)} test images of {ds.name} in batches of {plan.batch}: host (engine, fast CPU build) "
            f"{100 * host['test_acc']:.2f} %, onnxruntime {100 * acc:.2f} %, "
            f"{figures['differing_predictions']} predictions differ")
    if plan.network["model"] in MODELS:
        model, state = model_from_plan(plan, arrays)
        files["checkpoint.pt"] = encode_checkpoint(state)
        if ds is not None:
            figures["torch_acc"] = evaluate(model, ds, torch.device("cpu"), plan.batch)["test_acc"]
            log(f"e2t export: the PyTorch checkpoint (--precision fixed --psg, masked SLU) {100 * figures['torch_acc']:.2f} %")
    files["eval.json"] = (json.dumps(figures, indent=1) + "\n").encode()
    write_folder(out, files)
    print(f"wrote {out}: {', '.join(sorted(files))}")
    return figures
