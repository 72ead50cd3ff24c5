"""Config loading: YAML plus overrides, validation, round trip."""

from pathlib import Path

import pytest
import yaml

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
    (["cfg_scales=[-1,2]"], "cfg_scales"),
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


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _yaml_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in tree.items():
        keys.add(f"{prefix}{k}")
        if isinstance(v, dict):
            keys |= _yaml_keys(v, f"{prefix}{k}.")
    return keys


def _schema_keys(schema) -> set[str]:
    from tbcm.config import _all_keys

    return set(_all_keys(schema))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_names_only_the_schemas_keys(path):
    schema = TeacherTrainConfig if path.name.startswith("teacher_") else DistillConfig
    keys = _yaml_keys(yaml.safe_load(path.read_text()))
    assert keys <= _schema_keys(schema), sorted(keys - _schema_keys(schema))  # no old or unknown key
    load_config(schema, path)


def test_the_embedded_defaults_recipe_is_written_out_whole():
    # every key, so the main job's recipe does not move when a library default does
    assert _yaml_keys(yaml.safe_load((CONFIGS / "distill_digits.yaml").read_text())) == _schema_keys(DistillConfig)
    assert load_config(TeacherTrainConfig, CONFIGS / "teacher_digits.yaml") == TeacherTrainConfig()


def test_the_library_default_is_the_papers_recipe_not_a_tuned_one():
    cfg = DistillConfig()
    assert cfg.guidance_interval == []  # guided everywhere
    # TBCM's w in {4, 4.5, 5} is its rule at Sana's guidance: unset scales resolve around the teacher's
    from tbcm.models.bundle import ModelMeta
    from tbcm.models.guidance import resolve_guidance

    assert cfg.cfg_scales == [] and cfg.sampler.cfg_scale is None
    resolve_guidance(cfg, ModelMeta(kind="teacher", sigma_d=0.5, channels=4, image_size=32, network={},
                                    prompt_encoder={}, family="sana"))
    assert cfg.cfg_scales == [4.0, 4.5, 5.0] and cfg.sampler.cfg_scale == 4.5
    assert cfg.objective.endpoint.weight == 0 and cfg.objective.adversarial.weight == 0
    assert cfg.objective.distribution_matching.weight == 0
    # sCM's few-step sampler: fresh noise on the shifted route, no explicit routes
    assert (cfg.sampler.shift, cfg.sampler.fresh_noise, cfg.sampler.routes) == (2.5, 1.0, [])
    assert (cfg.pairs.route_points, cfg.pairs.shift, cfg.pairs.jitter) == (16, 2.5, True)


def test_validate_does_not_change_the_config():
    from tbcm.config import validate

    cfg = DistillConfig()
    before = repr(cfg)
    validate(cfg)
    assert repr(cfg) == before


def test_old_run_configs_load_through_the_renamed_keys(tmp_path):
    old = tmp_path / "old.yaml"  # the shape every run folder saved before the redesign
    old.write_text("sample:\n  cfg_scale: 3.0\n  student_shift: 0.25\n  student_fresh_noise: 0.5\n"
                   "  student_routes: [[0.26, 0.25, 0.24]]\n  shift: 2.5\n  seeds: 2\nsample_every: 5\n"
                   "objective:\n  endpoint_weight: null\n  endpoint_min_angle: 0.0\n"
                   "pairs:\n  route: official\n  noise_point: false\n  renoised_points: 0\n"
                   "  renoised_max_angle: 1.5707963267948966\n  points_per_trajectory: 0\n  substeps: 1\n")
    cfg = load_config(DistillConfig, old, ["sample.cfg_scale=2.0", "objective.endpoint_weight=0.3"])
    assert (cfg.sampler.cfg_scale, cfg.sampler.shift, cfg.sampler.fresh_noise) == (2.0, 0.25, 0.5)
    assert cfg.sampler.routes == [[0.26, 0.25, 0.24]] and cfg.preview.seeds == 2 and cfg.preview.every == 5
    assert cfg.objective.endpoint.weight == 0.3
    # unset, it meant the recipe's 0.1 with the trajectory source
    assert load_config(DistillConfig, old).objective.endpoint.weight == 0.1


@pytest.mark.parametrize("override,why", [
    ("pairs.noise_point=true", "pure-noise pair measured worse"),
    ("pairs.renoised_points=4", "re-noised pairs measured worse"),
    ("pairs.route=tbcm_v1", "tbcm_v1 route measured worse"),
    ("pairs.points_per_trajectory=15", "one ablation"),
    ("pairs.substeps=4", "finer teacher solve"),
])
def test_a_removed_option_that_was_on_is_a_one_line_error(override, why):
    with pytest.raises(UserError, match=f"{override.split('=')[0]}' was removed: .*{why}") as exc:
        load_config(DistillConfig, None, [override])
    assert "\n" not in str(exc.value)


def test_the_endpoint_term_needs_the_trajectory_source():
    with pytest.raises(UserError, match="objective.endpoint.weight.*source=forward"):
        load_config(DistillConfig, None, ["source=forward", "objective.endpoint.weight=0.1"])
    assert load_config(DistillConfig, None, ["source=forward"]).objective.endpoint.weight == 0.0
