import pytest

from contract.errors import E2TError
from host.train.config import TrainConfig, lr_at


def test_lr_schedule_keyed_on_iterations():
    cfg = TrainConfig(lr=0.1, lr_milestones=(0.5, 0.75), lr_gamma=0.1)
    lrs = [lr_at(cfg, i, 64_000) for i in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_round_trip_through_dict():
    cfg = TrainConfig(model="resnet8", lr_milestones=(0.3,))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs,match", [
    ({"model": "resnet19"}, "unknown model"),
    ({"backend": "fpga9000"}, "unknown backend"),
    ({"epochs": 0}, "--epochs"),
    ({"lr_milestones": (0.75, 0.5)}, "--lr-milestones"),
    ({"momentum": 1.0}, "momentum"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(E2TError, match=match):
        TrainConfig(**kwargs)


def test_unknown_saved_setting():
    with pytest.raises(E2TError, match="unknown settings: colour"):
        TrainConfig.from_dict({"colour": "red"})


def test_psg_tile_follows_the_board_unless_given(tmp_path):
    """Both backends count PSG's recomputed work in the board engine's tiles by default; an engine
    backend refuses a --psg-tile its engine does not have (the reference may study any)."""
    from host.train.trainer import EngineTrainer
    assert TrainConfig(psg=True, precision="fixed").psg_tiles() == (8, 8)
    assert TrainConfig(psg=True, precision="fixed", board="zcu104").psg_tiles() == (16, 16)
    assert TrainConfig(psg=True, precision="fixed", psg_tile=4).psg_tiles() == (4, 4)
    cfg = TrainConfig(backend="emu", dataset="digits", psg=True, precision="fixed", psg_tile=16)
    with pytest.raises(E2TError, match=r"--psg-tile 16: the engine of pynq-z2 recomputes tiles of 8 x 8"):
        EngineTrainer(cfg, str(tmp_path / "r"), progress=False, log=lambda m: None)
    assert not (tmp_path / "r").exists()


def test_the_e2train_preset_is_a_valid_config_and_flags_override_it():
    from e2t.cli import build_parser, config_from_args, resume_config
    from host.train.config import PRESETS, as_flags, preset

    parse = build_parser().parse_args
    cfg = config_from_args(parse(["train", "--preset", "e2train", "--backend", "emu"]))
    assert {k: getattr(cfg, k) for k in PRESETS["e2train"]} == PRESETS["e2train"] and cfg.backend == "emu"
    assert config_from_args(parse(["train", "--preset", "e2train", "--smd", "0.25"])).smd == 0.25
    # the flags the preset stands for give the same config (what e2t deploy writes into train.sh)
    assert config_from_args(parse(["train", *as_flags(PRESETS["e2train"])])) == config_from_args(
        parse(["train", "--preset", "e2train"]))
    plain = config_from_args(parse(["train", *as_flags(preset("e2train", slu=False))]))
    assert plain.slu_target is None and plain.psg and plain.smd == 0.5
    with pytest.raises(E2TError, match="unknown --preset 'x'"):
        config_from_args(parse(["train", "--preset", "x"]))
    # --resume with a preset the saved run does not have is refused, as a contradicting flag is
    with pytest.raises(E2TError, match="--smd 0.5 differs"):
        resume_config(parse(["train", "--preset", "e2train", "--resume"]), TrainConfig().to_dict())
