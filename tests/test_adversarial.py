"""The data-free adversarial term: heads on the frozen teacher, its gradient (against finite
differences), the fake side equal to the real 1-step sampler, exact resume, DDP."""

import copy
import math

import pytest
import torch

from tbcm.errors import UserError
from tbcm.objectives.adversarial import hinge_d_loss, one_step_sample, renoise
from tbcm.sampling import student_sample
from tests.extra_terms import assert_resume_bit_identical, distiller, flat, two_rank_states

ADV = ["objective.adversarial.weight=0.5", "objective.adversarial.samples=3", "objective.adversarial.lr=1e-2",
       "prompts_per_step=2", "pairs.route_points=4", "pairs.pool_prompts=4", "threads=1", "text_cache=none",
       "optim.warmup_steps=0", "start_check_max_error=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _distiller(teacher_dir, *extra):
    return distiller(teacher_dir, [*ADV, *extra])


def _tensors(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_only_the_heads_train_and_the_teacher_stays_frozen(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    disc = d.term("adversarial").module
    teacher_ids = {id(p) for p in d.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in disc.parameters()}
    assert set(disc.state_dict()) == {k for k in disc.state_dict() if k.startswith("heads.")}
    teacher0, heads0, student0 = _tensors(d.teacher), _tensors(disc), _tensors(d.student)
    for _ in range(3):
        stats = d.train_step()
    assert all(math.isfinite(stats[k]) for k in ("adv_g", "adv_d")) and stats["adv_d"] != 0
    assert all(torch.equal(v, d.teacher.state_dict()[k]) for k, v in teacher0.items())
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in heads0.items())
    assert any(not torch.equal(v, d.student.state_dict()[k]) for k, v in student0.items())


def test_discriminator_gradient_through_the_frozen_teacher_matches_finite_differences(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    disc = d.term("adversarial").module.double()
    d.teacher.F.double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *d.image_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.4, 1.1], dtype=torch.float64)
    cond = d.conds.index(torch.tensor([0, 1])).apply(lambda z: z.double() if z.is_floating_point() else z)
    disc(x, s, cond).sum().backward()
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        fd = (disc(x + h * v, s, cond).sum() - disc(x - h * v, s, cond).sum()) / (2 * h)
    assert float((x.grad * v).sum()) == pytest.approx(float(fd), rel=1e-6)
    assert float(x.grad.abs().max()) > 0


def test_the_fake_side_is_the_students_one_step_sample(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    noise = torch.randn(3, *d.image_shape, generator=torch.Generator().manual_seed(1))
    cond, w = d.conds.index(torch.tensor([0, 1, 2])), torch.tensor([1.0, 1.25, 1.5])
    t = torch.full((3,), math.pi / 2)
    with torch.no_grad():
        F = d.student(noise, t, cond, w)
        expected = student_sample(d.student, cond, w, noise, [math.pi / 2, 0.0])
    assert torch.allclose(one_step_sample(F, noise, d.sigma_d), expected, atol=1e-6)


def test_hinge_loss_and_renoising_closed_forms():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2], relu(1 + fake) = [0, 1, 2]
    assert float(hinge_d_loss(real, fake)) == pytest.approx(2.5 / 3 + 3 / 3)
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    s = torch.tensor([0.0, math.pi / 2])
    out = renoise(x0, s, eps, 0.5)
    assert torch.allclose(out[0], x0[0]) and torch.allclose(out[1], 0.5 * eps[1], atol=1e-6)


def test_resume_with_the_adversarial_term_is_bit_identical(tiny_teacher_dir, tmp_path):
    assert_resume_bit_identical(tiny_teacher_dir, ADV, tmp_path, "adversarial")


def test_adversarial_config_errors(tiny_teacher_dir):
    with pytest.raises(UserError, match="objective.adversarial.weight"):
        _distiller(tiny_teacher_dir, "source=forward")
    with pytest.raises(UserError, match="objective.adversarial.blocks"):
        _distiller(tiny_teacher_dir, "objective.adversarial.blocks=[]")
    d = _distiller(tiny_teacher_dir, "objective.adversarial.weight=0")
    assert d.term("adversarial") is None and "adv_g" not in d.train_step()
    with pytest.raises(UserError, match="without objective.adversarial"):
        _distiller(tiny_teacher_dir).load_state_dict(copy.deepcopy(d.state_dict()))


def test_two_ddp_ranks_keep_identical_heads_and_students(tmp_path, tiny_teacher_dir):
    a, b = two_rank_states(tmp_path, tiny_teacher_dir, ADV, "adversarial", "adv_d")
    assert torch.equal(a["term"], b["term"]) and torch.equal(a["student"], b["student"])
    assert math.isfinite(a["stat"])
    assert not torch.equal(flat(_distiller(tiny_teacher_dir).term("adversarial").module), a["term"])  # the heads did train
