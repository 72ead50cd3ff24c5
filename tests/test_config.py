"""Config loading: YAML plus overrides, validation, round trip."""

import pytest

from tbcm.config import DistillConfig, TeacherTrainConfig, load_config, save_config
from tbcm.errors import UserError


def test_yaml_then_overrides_then_round_trip(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\noptim:\n  lr: 0.001\ncfg_scales: [2.0, 3.0]\n")
    cfg = load_config(DistillConfig, f, ["optim.lr=2e-4", "pairs.jitter=false"])
    assert cfg.steps == 7 and cfg.optim.lr == 2e-4 and cfg.cfg_scales == [2.0, 3.0] and cfg.pairs.jitter is False
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(DistillConfig, tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("overrides,needle", [
    (["steps=0"], "steps=0"),
    (["optim.lr=-1"], "optim.lr=-1"),
    (["optim.ema_decay=1.5"], "optim.ema_decay"),
    (["cfg_scales=[]"], "cfg_scales"),
    (["pairs.route_points=1"], "pairs.route_points"),
    (["objective.calm_down_start=10", "objective.calm_down_end=5"], "calm_down_end"),
    (["pairs.routepoints=3"], "did you mean 'pairs.route_points'"),
])
def test_invalid_values_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=None) as exc:
        load_config(DistillConfig, None, overrides)
    assert needle in str(exc.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(DistillConfig, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(DistillConfig, bad)
    with pytest.raises(UserError, match="as YAML"):  # an unclosed list in an override
        load_config(DistillConfig, None, ["cfg_scales=[1,2"])
    with pytest.raises(UserError, match="divisible"):
        load_config(TeacherTrainConfig, None, ["image_size=9"])


def test_shipped_configs_are_the_embedded_defaults():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    assert load_config(DistillConfig, root / "distill_digits.yaml") == load_config(DistillConfig)
    assert "endpoint_weight: null" in (root / "distill_digits.yaml").read_text()  # unset: resolved per source
    shipped_teacher = load_config(TeacherTrainConfig, root / "teacher_digits.yaml")
    assert shipped_teacher == TeacherTrainConfig()


def test_the_endpoint_weight_left_unset_is_the_recipes_per_source():
    from tbcm.objectives.scm import ENDPOINT_WEIGHT

    assert load_config(DistillConfig).objective.endpoint_weight == ENDPOINT_WEIGHT == 0.1
    for source in ("forward", "teacher_x0"):  # no trajectory end to pin to
        assert load_config(DistillConfig, None, [f"source={source}"]).objective.endpoint_weight == 0.0

    with pytest.raises(UserError, match="objective.endpoint_weight.*source=forward"):  # set by hand: refused
        load_config(DistillConfig, None, ["source=forward", "objective.endpoint_weight=0.1"])
    assert load_config(DistillConfig, None, ["objective.endpoint_weight=0"]).objective.endpoint_weight == 0.0
