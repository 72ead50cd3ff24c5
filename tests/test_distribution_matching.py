"""The distribution-matching (DMD) term: its direction against the closed-form KL gradient of two
Gaussians, the fake score starting as the teacher, what trains and what stays frozen, exact
resume, DDP."""

import copy
import math

import pytest
import torch

from tbcm.errors import UserError
from tbcm.objectives.adversarial import fake_sample_inputs
from tbcm.objectives.terms import StepBatch
from tbcm.objectives.distribution_matching import dmd_direction, dmd_generator_loss, fake_score_target
from tbcm.trigflow import consistency_fn, forward_noise
from tests.extra_terms import assert_resume_bit_identical, distiller, flat, two_rank_states

DMD = ["objective.distribution_matching.weight=1.0", "objective.distribution_matching.samples=3",
       "objective.distribution_matching.lr=1e-2", "objective.distribution_matching.critic_steps=2",
       "prompts_per_step=2", "pairs.route_points=4", "pairs.pool_prompts=4", "threads=1", "text_cache=none",
       "optim.warmup_steps=0", "start_check_max_error=0",
       # guided everywhere: at step 0 the fake score is the teacher's conditional score, so the term's
       # gradient is guidance alone, which the default's interval switches off above 0.5 rad
       "guidance_interval=[]"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _distiller(teacher_dir, *extra):
    return distiller(teacher_dir, [*DMD, *extra])


def _tensors(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_exact_F_of_a_renoised_sample_predicts_the_sample_back():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    s, sd = torch.tensor([0.2, 0.9, 1.5]), 0.5
    x_s = forward_noise(x0, s, sd * eps)
    F = fake_score_target(x0, eps, s, sd)
    assert torch.allclose(consistency_fn(x_s, s, F, sd), x0, atol=1e-5)
    # F is dx_s/ds / sigma_d: a central difference in s of the same (x0, eps)
    h = 1e-3
    fd = (forward_noise(x0, s + h, sd * eps) - forward_noise(x0, s - h, sd * eps)) / (2 * h * sd)
    assert torch.allclose(F, fd, atol=1e-3)


def test_the_direction_follows_the_kl_gradient_between_two_gaussians():
    """Real data N(mu_r, sd^2 I), student samples N(mu_f, sd^2 I): in TrigFlow, E[x0 | x_s] = sin^2 s mu +
    cos s x_s, so with exact scores the DMD direction is sin^2 s (mu_f - mu_r) / scale at every x_s:
    parallel to the KL gradient (mu_f - mu_r) / sd^2, and a descent step moves the samples to mu_r."""
    gen = torch.Generator().manual_seed(1)
    sd, shape = 0.5, (4, 1, 6, 6)
    mu_r, mu_f = torch.randn(shape[1:], generator=gen), torch.randn(shape[1:], generator=gen)
    x0 = mu_f + sd * torch.randn(shape, generator=gen)
    s = torch.tensor([0.3, 0.8, 1.2, 1.5])
    x_s = forward_noise(x0, s, sd * torch.randn(shape, generator=gen))

    def exact_F(mu):  # the F whose x0 prediction is the Gaussian posterior mean
        c, sn = torch.cos(s).view(-1, 1, 1, 1), torch.sin(s).view(-1, 1, 1, 1)
        return (c * x_s - (sn ** 2 * mu + c * x_s)) / (sn * sd)

    direction = dmd_direction(x0, consistency_fn(x_s, s, exact_F(mu_r), sd), consistency_fn(x_s, s, exact_F(mu_f), sd))
    kl_grad = (mu_f - mu_r).flatten()
    for k in range(shape[0]):
        cosine = torch.nn.functional.cosine_similarity(direction[k].flatten(), kl_grad, dim=0)
        assert float(cosine) == pytest.approx(1.0, abs=1e-5)
    x = x0.clone().requires_grad_(True)
    dmd_generator_loss(x, direction).backward()
    assert torch.allclose(x.grad, direction / x.numel(), atol=1e-7)
    moved = x0 - 0.1 * x.numel() * x.grad  # a small descent step (0.1 in units of the direction)
    assert (moved.mean(0) - mu_r).norm() < (x0.mean(0) - mu_r).norm()


def test_the_fake_score_starts_as_the_teachers_conditional_F_and_the_term_as_zero_at_w1(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, *d.image_shape, generator=gen)
    t, cond = torch.tensor([0.3, 1.0, 1.5]), d.conds.index(torch.tensor([0, 1, 2]))
    with torch.no_grad():
        for w in (1.0, 1.5):  # its guidance input starts at zero, as the student's does
            assert torch.allclose(d.term("distribution_matching").module(x, t, cond, torch.full((3,), w)), d.teacher.F(x, t, cond), atol=1e-6)
    # at w = 1 the guided teacher is the conditional one: the real and fake scores agree, no push
    term = d.term("distribution_matching")
    (noise, t, cond, w), _ = fake_sample_inputs(StepBatch(d.source.next_pairs(2), 0, 1.0, None), 3, term.ctx, gen)
    w = torch.ones_like(w)
    g_loss, _ = term.generator_loss((noise, t, cond, w), d.student(noise, t, cond, w))
    assert float(g_loss.detach()) < 1e-12
    w = torch.full_like(w, 1.5)  # above 1 the teacher is guided and the student is not yet: a push
    g_loss, _ = term.generator_loss((noise, t, cond, w), d.student(noise, t, cond, w))
    assert float(g_loss.detach()) > 1e-7  # the tiny random teacher guides weakly


def test_the_student_and_fake_score_train_and_the_teacher_stays_frozen(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    fake = d.term("distribution_matching").module
    assert not {id(p) for p in d.teacher.parameters()} & {id(p) for p in fake.parameters()}
    assert not {id(p) for p in d.student.parameters()} & {id(p) for p in fake.parameters()}
    teacher0, fake0 = _tensors(d.teacher), _tensors(fake)
    for _ in range(2):
        stats = d.train_step()
    assert all(math.isfinite(stats[k]) for k in ("dmd_g", "dmd_fake")) and stats["dmd_fake"] > 0
    assert all(torch.equal(v, d.teacher.state_dict()[k]) for k, v in teacher0.items())
    assert any(not torch.equal(v, fake.state_dict()[k]) for k, v in fake0.items())
    # the term moves the student: the same step without it (same pairs, same seeds) lands elsewhere
    with_term, without = _distiller(tiny_teacher_dir), _distiller(tiny_teacher_dir, "objective.distribution_matching.start_step=5")
    with_term.train_step(), without.train_step()
    assert not torch.equal(flat(with_term.student), flat(without.student))
    assert torch.equal(flat(with_term.term("distribution_matching").module), flat(without.term("distribution_matching").module))  # trains from step 0 in both


def test_resume_with_the_distribution_matching_term_is_bit_identical(tiny_teacher_dir, tmp_path):
    assert_resume_bit_identical(tiny_teacher_dir, DMD, tmp_path, "distribution_matching")


def test_distribution_matching_config_errors(tiny_teacher_dir):
    with pytest.raises(UserError, match="objective.distribution_matching.critic_steps"):
        _distiller(tiny_teacher_dir, "objective.distribution_matching.critic_steps=0")
    d = _distiller(tiny_teacher_dir, "objective.distribution_matching.weight=0")
    assert d.term("distribution_matching") is None and "dmd_g" not in d.train_step()
    with pytest.raises(UserError, match="without objective.distribution_matching"):
        _distiller(tiny_teacher_dir).load_state_dict(copy.deepcopy(d.state_dict()))


def test_two_ddp_ranks_keep_identical_fake_scores_and_students(tmp_path, tiny_teacher_dir):
    a, b = two_rank_states(tmp_path, tiny_teacher_dir, DMD, "distribution_matching", "dmd_fake")
    assert torch.equal(a["term"], b["term"]) and torch.equal(a["student"], b["student"])
    assert math.isfinite(a["stat"])
    assert not torch.equal(flat(_distiller(tiny_teacher_dir).term("distribution_matching").module), a["term"])  # the fake score did train
