"""The guidance a distillation trains on when the run names none: the teacher's own scale."""

import pytest
import yaml

from tbcm.config import DistillConfig, load_config
from tbcm.models.bundle import ModelMeta, load_bundle
from tbcm.sampler import StudentSampler
from tbcm.models.guidance import PAPER_GUIDANCE, middle_scale, resolve_guidance, scales_around, teacher_guidance
from tbcm.train import Distiller


def _meta(guidance=None, family="tbcm"):
    return ModelMeta(kind="teacher", sigma_d=0.5, channels=1, image_size=8, network={}, prompt_encoder={},
                     family=family, guidance=guidance)


def test_the_paper_scales_are_its_rule_at_sanas_guidance():
    assert scales_around(4.5) == [4.0, 4.5, 5.0]  # TBCM's {4, 4.5, 5}
    assert scales_around(2.0) == [1.5, 2.0, 2.5]
    assert scales_around(0.25) == [0.0, 0.25, 0.75]  # none below 0
    assert middle_scale([5.0, 4.0, 4.5]) == 4.5 and middle_scale([1.0, 3.0]) == 1.0


def test_the_teachers_scale_comes_from_its_folder_then_its_family_then_the_paper():
    assert teacher_guidance(_meta(2.0))[0] == 2.0
    assert teacher_guidance(_meta(None, "sana"))[0] == 4.5  # SanaPipeline's default guidance_scale
    assert teacher_guidance(_meta(None, "sd3"))[0] == 7.0  # StableDiffusion3Pipeline's
    g, source = teacher_guidance(_meta(None, "tbcm"))
    assert g == PAPER_GUIDANCE and "model.yaml" in source  # says how to name one


def test_a_run_that_names_its_scales_keeps_them():
    cfg = load_config(DistillConfig, None, ["cfg_scales=[1,2,3]"])
    assert resolve_guidance(cfg, _meta(7.0)) is None
    assert cfg.cfg_scales == [1.0, 2.0, 3.0] and cfg.sampler.cfg_scale == 2.0  # the middle one
    cfg = load_config(DistillConfig, None, ["sampler.cfg_scale=0.5"])
    resolve_guidance(cfg, _meta(2.0))
    assert cfg.cfg_scales == [1.5, 2.0, 2.5] and cfg.sampler.cfg_scale == 0.5  # a named sampler scale stays


def test_an_unset_run_trains_around_the_teachers_scale_and_saves_it(tiny_teacher_dir, tmp_path, capsys):
    meta_file = tiny_teacher_dir / "model.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    assert "guidance" not in meta  # a folder that names none writes none
    meta_file.write_text(yaml.safe_dump({**meta, "guidance": 2.0}, sort_keys=False))
    assert load_bundle(tiny_teacher_dir).meta.guidance == 2.0
    cfg = load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "steps=1", "prompts_per_step=2",
                                            "pairs.route_points=4", "sampler.tune=false", "preview.seeds=1",
                                            "preview.student_steps=[1]", "preview.teacher_steps=2"])
    d = Distiller(cfg)
    assert "around 2" not in capsys.readouterr().err  # said once the run starts, after every input check
    drawn = {float(w) for _ in range(4) for w in d.source.next_pairs(4).w}
    assert drawn <= {1.5, 2.0, 2.5} and len(drawn) >= 2  # the rollouts draw w from the teacher's scales
    out = d.run(tmp_path / "run", progress=False)
    assert "around 2" in capsys.readouterr().err
    saved = load_config(DistillConfig, out / "config.yaml")
    assert saved.cfg_scales == [1.5, 2.0, 2.5] and saved.sampler.cfg_scale == 2.0  # rerunnable as it ran
    sampler = StudentSampler.from_extra(load_bundle(out / "student", expect_kind="student").meta.extra)
    assert sampler.cfg_scale == 2.0 and sampler.cfg_scales == [1.5, 2.0, 2.5]


@pytest.mark.parametrize("bad", ["oops", -1.0, float("nan")])
def test_a_bad_guidance_in_a_teachers_folder_is_refused_in_one_line(bad):
    from tbcm.errors import UserError

    with pytest.raises(UserError, match="model.yaml has guidance") as exc:
        teacher_guidance(_meta(bad))
    assert "\n" not in str(exc.value)


def test_guidance_zero_is_kept_in_the_folder():
    assert _meta(0.0).to_dict()["guidance"] == 0.0 and "guidance" not in _meta(None).to_dict()


@pytest.mark.parametrize("bad", ["cfg_scales=[-1]", "sampler.cfg_scale=-2"])
def test_negative_scales_are_refused_in_one_line(bad):
    from tbcm.errors import UserError

    with pytest.raises(UserError, match="scale|>= 0"):
        load_config(DistillConfig, None, [bad])
