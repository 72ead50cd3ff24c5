"""The teacher rollout against a reference ODE solve, and the trajectory pair source."""

import math

import pytest
import torch
from scipy.integrate import solve_ivp

from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource
from tbcm.sampling import rollout
from tbcm.trigflow import official_reference_route, reference_route

from .conftest import assert_close_to_scale


@pytest.fixture
def teacher(tiny_teacher_dir):
    return Teacher.from_bundle(load_bundle(tiny_teacher_dir, expect_kind="teacher"))


def _reference_solve(teacher, x_init, cond, w):
    """RK45 with tight tolerances on dx/dt = u(x, t), from t = pi/2 down to 0."""
    shape = x_init.shape

    def rhs(t, y):
        x = torch.tensor(y, dtype=torch.float32).reshape(shape)
        tt = torch.full((shape[0],), t, dtype=torch.float32)
        return teacher.velocity(x, tt, cond, w).double().numpy().ravel()

    sol = solve_ivp(rhs, (math.pi / 2, 0.0), x_init.double().numpy().ravel(), method="RK45", rtol=1e-6, atol=1e-7)
    assert sol.success
    return torch.tensor(sol.y[:, -1]).reshape(shape)


def test_rollout_converges_to_the_reference_ode_solution_at_first_order(tiny_teacher_dir):
    # timestep_scale 1: the time embedding sees tau in [0, 1], so the ODE is smooth in t and the
    # adaptive reference solver needs few steps (at 1000 it resolves fast sinusoid wiggles).
    b = load_bundle(tiny_teacher_dir, expect_kind="teacher")
    teacher = Teacher(b.network, b.encoder, b.meta.sigma_d, timestep_scale=1.0)
    enc = teacher.encoder
    cond = enc.encode(["a handwritten digit 2", "a handwritten digit 7"])
    w = torch.tensor([2.0, 1.5])
    x_init = teacher.sigma_d * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = _reference_solve(teacher, x_init, cond, w)
    errors = {}
    for k in (100, 400):
        route = reference_route(k, 1.0).float().expand(2, -1)  # shift 1: a plain uniform-in-sigma route
        final = rollout(lambda x, t: teacher.velocity(x, t, cond, w), x_init, route).final
        errors[k] = float((final.double() - ref).abs().max())
    scale = float(ref.abs().max())
    assert errors[400] < 0.02 * scale, errors
    # first order: 4x the points, about 4x less error
    assert 2.5 < errors[100] / errors[400] < 6.0, errors


def test_trajectory_pairs_reuse_the_teacher_velocity_and_drop_the_noise_point(teacher):
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    cfg = TrajectoryConfig(route_points=6, shift=2.5, jitter=True)
    src = TrajectoryPairSource(teacher, conds, [4.0, 4.5, 5.0], (1, 8, 8), cfg,
                               generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([3, 3, 7])
    pairs = src.sample(ids)
    assert len(pairs) == 3 * 5 and pairs.x_t.shape == (15, 1, 8, 8) and pairs.u.shape == (15, 1, 8, 8)
    assert torch.all(pairs.t < math.pi / 2 - 1e-4) and torch.all(pairs.t > 0)  # no pure-noise point
    t = pairs.t.reshape(3, 5)
    assert torch.all(t[:, 1:] < t[:, :-1])  # each prompt's points follow its decreasing route
    assert not torch.allclose(t[0], t[1])  # jitter: routes differ per prompt
    assert set(pairs.w.tolist()) <= {4.0, 4.5, 5.0}
    assert torch.all(pairs.w.reshape(3, 5) == pairs.w.reshape(3, 5)[:, :1])  # one w per prompt
    assert torch.equal(pairs.cond.embeds, conds.index(ids).repeat_interleave(5).embeds)
    # the tangent is exactly the guided teacher velocity at the recorded state
    again = teacher.velocity(pairs.x_t, pairs.t, pairs.cond, pairs.w)
    assert_close_to_scale(pairs.u, again)
    # consecutive states are linked by the exact first-order step (a real trajectory, not re-noised)
    from tbcm.trigflow import trig_step

    nxt = trig_step(pairs.x_t[0:1], pairs.u[0:1], pairs.t[0:1], pairs.t[1:2])
    assert_close_to_scale(nxt, pairs.x_t[1:2])
    assert src.teacher_calls == 3 * 6


def test_fixed_route_and_blank_filter(teacher):
    conds = teacher.encoder.encode(["a handwritten digit 1"])
    ref = official_reference_route(4, 2.5).float()
    src = TrajectoryPairSource(teacher, conds, [4.0], (1, 8, 8), TrajectoryConfig(route_points=4, jitter=False),
                               generator=torch.Generator().manual_seed(0))
    pairs = src.sample(torch.tensor([0, 0]))
    assert torch.allclose(pairs.t.reshape(2, 3), ref[1:].expand(2, -1))
    blank = torch.full((4, 1, 8, 8), -1.0 * teacher.sigma_d)  # flow value -1 everywhere
    far = torch.full((4, 1, 8, 8), 1.0 * teacher.sigma_d)
    src.config.blank_threshold = 0.5
    assert torch.all(src.keep_mask(blank) == 0)  # MSE 0: dropped with probability 1
    assert torch.all(src.keep_mask(far) == 1)  # MSE 4 > threshold: always kept
    near = torch.full((4000, 1, 8, 8), -0.5 * teacher.sigma_d)  # MSE 0.25: dropped with p = 0.5
    assert abs(float(src.keep_mask(near).mean()) - 0.5) < 0.05
