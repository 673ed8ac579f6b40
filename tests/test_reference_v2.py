"""The reference trainer's twin of contract v2 (reference/intnet.py, ``--backend torch --precision
fixed --elementwise engine``) against the on-engine trainer's ``--elementwise engine``
(host/train/intops.py): the same integers step for step, and the same test accuracy."""
import re

import numpy as np
import pytest
import torch

from contract import numerics as nx
from contract.errors import E2TError
from host.train.config import TrainConfig
from reference import elementwise as ew
from reference.train import evaluate
from test_engine_training import _assert_the_reference_s_weights, _engine_from_it, _engine_state, _reference_exported


@pytest.mark.parametrize("seed", range(4))
def test_stats_and_apply_in_torch_give_the_contract_s_integers(seed):
    """reference/elementwise.py's STATS and APPLY against contract/numerics.py's on random int32
    tensors whose operands clip (sat18) and whose outputs saturate, every APPLY option."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-2 ** 31, 2 ** 31, (3, 5, 4, 6)) >> rng.integers(0, 31, (3, 5, 1, 1))
    b = rng.integers(-2 ** 31, 2 ** 31, a.shape) >> rng.integers(0, 31, (1, 5, 1, 1))
    t, u = (int(v) for v in rng.integers(0, 20, 2))
    want, _ = nx.channel_stats(a.astype(np.int32), t, b.astype(np.int32), u)
    assert np.array_equal(ew.stats(torch.from_numpy(a), t, torch.from_numpy(b), u), want)
    assert np.array_equal(ew.stats(torch.from_numpy(a), t), nx.channel_stats(a.astype(np.int32), t)[0])
    coef = np.stack([rng.integers(-2 ** 23, 2 ** 23, 5), rng.integers(-2 ** 23, 2 ** 23, 5),
                     rng.integers(-2 ** 45, 2 ** 45, 5)], 1)
    mask = rng.integers(-2, 3, a.shape).astype(np.int8)
    for bits, fmt in ((8, nx.ACT), (16, nx.GRAD), (32, nx.OUT)):
        shift = 47 - bits + int(rng.integers(0, 9))  # the largest channels' outputs clip, the others' not
        for second, relu, masked in ((None, True, False), (b, False, True), (b % 256 - 128, True, True)):
            z, planes, _ = nx.apply_elementwise(a.astype(np.int32), coef, shift, None if second is None else
                                                second.astype(np.int8 if second is not b else np.int32), relu,
                                                mask if masked else None, bits)
            tz, tplanes = ew.apply(torch.from_numpy(a), coef, shift, None if second is None else
                                   torch.from_numpy(second), relu, torch.from_numpy(mask) if masked else None, fmt)
            assert np.array_equal(tz.numpy(), z) and np.array_equal(tplanes.numpy(), planes)


@pytest.fixture
def one_thread():
    """Small networks on a shared machine: one torch thread is many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("savings", [
    {"smd": 0.3},
    {"smd": 0.3, "slu_target": 0.6, "slu_beta": 1e-3, "slu_gate_init": 0.9, "slu_band": 0.05, "slu_exec": "gather"},
], ids=["smd+psg", "smd+slu+psg"])
def test_the_engine_trainer_reproduces_the_reference_v2_step_for_step(tmp_path, savings, one_thread):
    """Same initial weights (the reference's, exported to a plan), data order, SMD and SLU gate
    draws, contract v2 on both: after 24 iterations (12+ kept) every integer master weight and
    momentum equals the reference's, and so does every host float (BatchNorm's scale, shift and
    running statistics, the classifier, the gates' LSTM and output layer); the training loss
    agrees within 1e-6 relative; both count the same host work and, per layer and phase, the same
    engine MACs and modeled cycles (the reference from the plan, reference/boardcount.py). In
    inference (BatchNorm's running statistics through the same APPLY, in the engine trainer's
    batches) the test accuracy is the same and the test loss agrees within 1e-6 relative (the
    reference sums it in float32)."""
    cfg = TrainConfig(model="resnet8", dataset="digits", epochs=1, batch_size=32, lr=0.05, precision="fixed",
                      psg=True, elementwise="engine", **savings)
    ref = _reference_exported(cfg, tmp_path)
    emu = _engine_from_it(cfg, tmp_path)
    ref.iters_per_epoch = emu.iters_per_epoch = 24
    a, b = ref.train_epoch(), emu.train_epoch()
    assert a["kept_iterations"] == b["kept_iterations"] >= 12 and a["dropped_iterations"] == b["dropped_iterations"]
    assert abs(a["train_loss"] - b["train_loss"]) <= 1e-6 * abs(a["train_loss"])
    state = _engine_state(emu)
    _assert_the_reference_s_weights(ref, state)
    host = sum(f"host/{n}" in state for n in ref.model.state_dict())
    assert host >= 4 * 9 + 2 + (6 if "slu_target" in savings else 0)
    pa, pb = a["ops"]["per_layer"], b["ops"]["per_layer"]  # the engine's calls (STATS and APPLY too) counted alike
    assert pb.keys() <= pa.keys() and a["ops"]["host"] == b["ops"]["host"]
    assert all({ph: (s["macs"], s.get("cycles", 0)) for ph, s in pa[name].items()} ==
               {ph: (s["macs"], s.get("cycles", 0)) for ph, s in per.items()} for name, per in pb.items())
    ea, eb = evaluate(ref.model, ref.ds, ref.device, ref.eval_batch), emu.evaluate()
    assert ea["test_acc"] == eb["test_acc"] and abs(ea["test_loss"] - eb["test_loss"]) <= 1e-6 * eb["test_loss"]
    if "slu_target" in savings:  # the gates skipped some blocks: the gathered path and the mix ran
        assert 0.5 < a["executed_fraction"] == b["executed_fraction"] < 1
        assert ea["test_executed_fraction"] == eb["test_executed_fraction"]


@pytest.mark.parametrize("settings, message", [
    ({}, re.escape("--elementwise engine runs on the engine (--backend emu or pynq) or as the reference's twin "
                   "of it (--backend torch --precision fixed), not in fp32")),
    ({"precision": "fixed", "slu_target": 0.5, "slu_exec": "mask"}, "--slu-exec mask: --elementwise engine runs"),
])
def test_the_reference_takes_contract_v2_in_fixed_point_only(settings, message):
    with pytest.raises(E2TError, match=message):
        TrainConfig(backend="torch", model="resnet8", dataset="digits", elementwise="engine", **settings)
    assert TrainConfig(backend="torch", precision="fixed", elementwise="engine").elementwise == "engine"
