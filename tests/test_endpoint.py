"""The trajectory-endpoint term (objective.endpoint): by hand, and inside the distiller: the pairs carry
their trajectory ends, the term changes the update, and bad settings are refused in one line."""

import math

import pytest
import torch

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.errors import UserError
from tbcm.objectives.endpoint import endpoint_loss
from tbcm.pairs.base import Pairs

from .test_scm import LinearStudent

BASE = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "pairs.pool_prompts=4", "threads=1", "text_cache=none",
        "optim.warmup_steps=0", "start_check_max_error=0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _distiller(teacher_dir, *extra) -> Distiller:
    return Distiller(load_config(DistillConfig, None, [f"teacher={teacher_dir}", *BASE, *extra]))


def test_the_endpoint_term_trains_on_each_pairs_own_trajectory_end(tiny_teacher_dir):
    # without the pool, pairs come in trajectory order: 3 per trajectory (K - 1), each carrying
    # the end of its own trajectory
    pairs = _distiller(tiny_teacher_dir, "objective.endpoint.weight=1.0", "pairs.pool_prompts=0").source.next_pairs(2)
    assert pairs.x0 is not None and pairs.x0.shape == pairs.x_t.shape
    assert torch.equal(pairs.x0[0], pairs.x0[2]) and not torch.equal(pairs.x0[0], pairs.x0[3])
    on = _distiller(tiny_teacher_dir, "objective.endpoint.weight=1.0")
    off = _distiller(tiny_teacher_dir, "objective.endpoint.weight=0")
    assert on.source.next_pairs(2).x0 is not None and off.source.next_pairs(2).x0 is None
    s_on, s_off = on.train_step(), off.train_step()
    assert math.isfinite(s_on["endpoint"]) and s_on["endpoint"] > 0 and "endpoint" not in s_off
    # same seed, same pairs: only the term tells the two updates apart
    diff = [not torch.equal(a, b) for a, b in zip(on.student.parameters(), off.student.parameters())]
    assert any(diff)


def test_endpoint_config_errors(tiny_teacher_dir):
    with pytest.raises(UserError, match="objective.endpoint.weight"):
        _distiller(tiny_teacher_dir, "objective.endpoint.weight=-1")
    with pytest.raises(UserError, match="objective.endpoint.weight"):
        _distiller(tiny_teacher_dir, "objective.endpoint.weight=0.5", "source=forward")
    with pytest.raises(UserError, match="objective.endpoint.min_angle"):
        _distiller(tiny_teacher_dir, "objective.endpoint.weight=0.5", "objective.endpoint.min_angle=1.6")
    with pytest.raises(UserError, match="objective.endpoint.min_angle"):  # a window on a term that is off
        _distiller(tiny_teacher_dir, "objective.endpoint.weight=0", "objective.endpoint.min_angle=1.45")


def _endpoint(student, pairs, sd, min_angle=0.0):
    """The term's (loss over kept pairs, mean error over the window) through the student's F."""
    F = student(pairs.x_t / sd, pairs.t, None, None)
    return endpoint_loss(F, pairs, sd, min_angle, pairs.mask.to(F.dtype).sum().clamp(min=1.0))


def test_endpoint_term_adds_the_consistency_residual_to_the_trajectory_end_by_hand():
    # f(x_t, t) = cos t x_t - sin t sd F with F = a x_t / sd + b t; the term is
    # weight * mean_i mean_j (f_ij - x0_ij)^2 / sd^2 over kept pairs, and d/da of it is by hand too
    a, b, sd, lam = 0.8, -0.3, 0.5, 0.7
    xs = torch.tensor([[0.3, -0.5], [1.1, 0.2]], dtype=torch.float64)
    us = torch.tensor([[0.7, 0.1], [-0.4, 0.9]], dtype=torch.float64)
    ts = torch.tensor([0.4, 1.5], dtype=torch.float64)
    x0 = torch.tensor([[0.2, 0.1], [-0.3, 0.4]], dtype=torch.float64)
    mask = torch.tensor([1.0, 1.0])

    student = LinearStudent(a, b, 0.0)
    loss, mean_error = _endpoint(student, Pairs(xs, ts, us, None, torch.zeros(2), mask, x0=x0), sd)
    (lam * loss).backward()  # the trainer's weight
    term, grad = 0.0, 0.0
    for x_row, x0_row, t in zip(xs.tolist(), x0.tolist(), ts.tolist()):
        co, si = math.cos(t), math.sin(t)
        for x, y in zip(x_row, x0_row):
            f = co * x - si * sd * (a * x / sd + b * t)
            term += (f - y) ** 2 / sd**2 / 2 / 2  # mean over 2 elements, then over 2 pairs
            grad += 2 * (f - y) * (-si * x) / sd**2 / 2 / 2
    assert abs(loss.item() - term) < 1e-12
    assert abs(float(student.a.grad) - lam * grad) < 1e-12
    assert abs(float(mean_error) - term) < 1e-12


def test_endpoint_min_angle_drops_the_pairs_below_it_from_the_sum_not_from_the_mean():
    # two pairs at 0.4 and 1.5 rad: with the window at 1.0 the term is pair 2's residual over 2 pairs
    a, b, sd = 0.8, -0.3, 0.5
    xs = torch.tensor([[0.3, -0.5], [1.1, 0.2]], dtype=torch.float64)
    us = torch.tensor([[0.7, 0.1], [-0.4, 0.9]], dtype=torch.float64)
    ts = torch.tensor([0.4, 1.5], dtype=torch.float64)
    x0 = torch.tensor([[0.2, 0.1], [-0.3, 0.4]], dtype=torch.float64)

    def loss_of(angle):
        pairs = Pairs(xs, ts, us, None, torch.zeros(2), torch.ones(2), x0=x0)
        return _endpoint(LinearStudent(a, b, 0.0), pairs, sd, angle)

    co, si = math.cos(1.5), math.sin(1.5)
    f = [co * x - si * sd * (a * x / sd + b * 1.5) for x in xs[1].tolist()]
    term = sum((fi - y) ** 2 for fi, y in zip(f, x0[1].tolist())) / sd**2 / 2 / 2  # mean over 2 elements; / 2 pairs
    windowed, mean_error = loss_of(1.0)
    assert abs(windowed.item() - term) < 1e-12
    assert abs(float(mean_error) - 2 * term) < 1e-12  # the statistic: mean over the window's pairs
    above_all, _ = loss_of(1.55)
    assert abs(above_all.item()) < 1e-15


def test_endpoint_term_is_zero_at_the_exact_end_and_needs_the_trajectory_ends():
    student = LinearStudent(0.5, 0.1, 0.0)
    x = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    t = torch.tensor([1.2], dtype=torch.float64)
    u = torch.tensor([[0.7, 0.1]], dtype=torch.float64)
    with torch.no_grad():
        f = math.cos(1.2) * x - math.sin(1.2) * 0.5 * student(x / 0.5, t, None, None)
    loss, mean_error = _endpoint(student, Pairs(x, t, u, None, torch.zeros(1), torch.ones(1), x0=f), 0.5)
    assert float(mean_error) < 1e-24 and float(loss.detach()) < 1e-24
    with pytest.raises(ValueError, match="trajectory end"):
        _endpoint(student, Pairs(x, t, u, None, torch.zeros(1), torch.ones(1)), 0.5)
