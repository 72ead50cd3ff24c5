"""Guidance in a limited interval: the scales against their definition, the teacher's velocity
against separately computed conditional and guided passes, the rollout's tangents, the config."""

import math

import pytest
import torch

from tbcm.config import DistillConfig, validate
from tbcm.errors import UserError
from tbcm.models.adapter import interval_scales
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.pairs.prompts import PromptSampler
from tbcm.pairs.rollout_teacher import RolloutTeacher
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

from .conftest import assert_close_to_scale


def _teacher(teacher_dir):
    return Teacher.from_bundle(load_bundle(str(teacher_dir), expect_kind="teacher"))


def _two_passes(teacher, x_t, t, cond):
    """sd * F_cond and sd * F_null, each its own network call (not through guided_F)."""
    sd, x = teacher.sigma_d, x_t / teacher.sigma_d
    null = teacher.null_cond.apply(lambda z: z.expand(x.shape[0], *z.shape[1:]))
    return sd * teacher.F(x, t, cond), sd * teacher.F(x, t, null)


def test_scales_are_w_inside_the_half_open_interval_and_one_outside():
    w = torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, 2.0])
    t = torch.tensor([0.0, 0.2, 0.5, 0.5001, math.pi / 2, 0.3])
    assert torch.equal(interval_scales(w, t, (0.2, 0.5)), torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0, 2.0]))
    assert interval_scales(w, t, None) is w


@pytest.mark.parametrize("wrap", [False, True])
def test_the_teacher_is_guided_inside_and_conditional_outside(tiny_teacher_dir, wrap):
    teacher = _teacher(tiny_teacher_dir)
    teacher.guidance_interval = (0.0, 0.7)
    caller = RolloutTeacher(teacher, "fp32") if wrap else teacher
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8) * teacher.sigma_d
    t = torch.tensor([0.3, 1.2, 0.7, 1.5])  # inside, outside, on the upper end (inside), outside
    w = torch.tensor([4.0, 4.0, 2.0, 1.0])
    cond = teacher.encoder.encode(["a handwritten digit 3"] * 4)
    got = caller.velocity(x, t, cond, w)
    v_cond, v_null = _two_passes(teacher, x, t, cond)
    guided = v_null + w[:, None, None, None] * (v_cond - v_null)
    for i, inside in enumerate([True, False, True, False]):
        assert_close_to_scale(got[i], guided[i] if inside else v_cond[i])
    assert (guided[1] - v_cond[1]).abs().max() > 1e-3  # outside, guidance would have changed it


def test_rollout_tangents_follow_the_interval(tiny_teacher_dir):
    teacher = _teacher(tiny_teacher_dir)
    teacher.guidance_interval = (0.0, 0.8)
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    source = TrajectoryPairSource(teacher, conds, [3.0], (1, 8, 8), TrajectoryConfig(route_points=8),
                                  generator=torch.Generator().manual_seed(0), prompts=PromptSampler(10, seed=0))
    pairs = source.next_pairs(3)
    inside = pairs.t <= 0.8
    assert inside.any() and (~inside).any()
    v_cond, v_null = _two_passes(teacher, pairs.x_t, pairs.t, pairs.cond)
    assert_close_to_scale(pairs.u[inside], (v_null + 3.0 * (v_cond - v_null))[inside])
    assert_close_to_scale(pairs.u[~inside], v_cond[~inside])


@pytest.mark.parametrize("wrap", [False, True])
def test_outside_the_interval_only_the_conditional_pass_runs(tiny_teacher_dir, wrap):
    teacher = _teacher(tiny_teacher_dir)
    teacher.guidance_interval = (0.0, 0.5)
    caller = RolloutTeacher(teacher, "fp32") if wrap else teacher
    calls = []
    hook = teacher.F.net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x, cond = torch.randn(3, 1, 8, 8), teacher.encoder.encode(["a handwritten digit 1"] * 3)
    w = torch.full((3,), 4.0)
    caller.velocity(x, torch.tensor([1.0, 1.2, 1.5]), cond, w)  # nobody guided: [B]
    caller.velocity(x, torch.tensor([0.3, 1.2, 1.5]), cond, w)  # one guided: cond + null, [2B]
    teacher.guidance_interval = None
    caller.velocity(x, torch.tensor([1.0, 1.2, 1.5]), cond, w)  # no interval: guided everywhere
    hook.remove()
    assert calls == [3, 6, 6]


@pytest.mark.parametrize("bad", [[0.5, 0.2], [0.0, 3.0], [-0.1, 0.5], [0.5], [0.0, float("nan")]])
def test_a_bad_interval_is_a_one_line_error_naming_the_key(bad):
    cfg = DistillConfig()
    cfg.guidance_interval = bad
    with pytest.raises(UserError, match="guidance_interval"):
        validate(cfg)


def test_good_intervals_validate():
    for good in ([], [0.0, 0.5], [0.2, math.pi / 2]):
        cfg = DistillConfig()
        cfg.guidance_interval = good
        validate(cfg)


def test_a_run_guides_its_teacher_in_the_interval_and_records_it_with_the_student(tiny_teacher_dir, tmp_path):
    from tbcm.config import load_config
    from tbcm.train import Distiller
    from tbcm.train.outputs import save_student

    cfg = load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "prompts_per_step=2", "pairs.route_points=4",
                                            "pairs.pool_prompts=0", "guidance_interval=[0.0,0.6]", "cfg_scales=[3.0]"])
    d = Distiller(cfg)
    assert d.teacher.guidance_interval == (0.0, 0.6)
    pairs = d.source.next_pairs(2)
    outside = pairs.t > 0.6
    assert outside.any()
    v_cond, _ = _two_passes(d.teacher, pairs.x_t, pairs.t, pairs.cond)
    assert_close_to_scale(pairs.u[outside], v_cond[outside])
    save_student(d, d.student_for_sampling(), tmp_path / "student")
    assert load_bundle(tmp_path / "student", expect_kind="student").meta.extra["sampler"]["guidance_interval"] == [0.0, 0.6]
