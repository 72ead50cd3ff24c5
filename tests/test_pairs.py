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


def test_noise_point_keeps_the_pure_noise_state_at_pi_over_2_with_the_same_trajectories(teacher):
    # with pairs.noise_point each trajectory gives K pairs: its noise state sigma_d eps at exactly
    # pi/2 (the 1-step sampler's input), then the same K - 1 states as without it
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    ids = torch.tensor([3, 7])

    def pairs_of(noise_point):
        src = TrajectoryPairSource(teacher, conds, [1.0, 1.5], (1, 8, 8),
                                   TrajectoryConfig(route_points=6, noise_point=noise_point),
                                   generator=torch.Generator().manual_seed(0))
        src.keep_final = True
        return src.sample(ids), src.teacher_calls

    (without, calls_without), (with_noise, calls_with) = pairs_of(False), pairs_of(True)
    assert len(with_noise) == 2 * 6 and calls_with == calls_without == 2 * 6  # no extra teacher call
    t = with_noise.t.reshape(2, 6)
    assert torch.all(t[:, 0] == torch.tensor(math.pi / 2, dtype=torch.float32))
    # the same noise as the rollout without the point (same generator draws): x_t at pi/2 is pure noise
    eps = with_noise.x_t.reshape(2, 6, 1, 8, 8)[:, 0] / teacher.sigma_d
    assert abs(float(eps.std()) - 1.0) < 0.3
    assert torch.equal(with_noise.x_t.reshape(2, 6, 1, 8, 8)[:, 1:].reshape(10, 1, 8, 8), without.x_t)
    assert torch.equal(with_noise.x0.reshape(2, 6, 1, 8, 8)[:, 0], without.x0.reshape(2, 5, 1, 8, 8)[:, 0])
    # the first state's tangent is the guided velocity at the noise, and one first-order step from it
    # lands on the next state
    again = teacher.velocity(with_noise.x_t[:1], with_noise.t[:1], with_noise.cond.index(torch.tensor([0])),
                             with_noise.w[:1])
    assert_close_to_scale(with_noise.u[:1], again)
    from tbcm.trigflow import trig_step

    nxt = trig_step(with_noise.x_t[0:1], with_noise.u[0:1], with_noise.t[0:1], with_noise.t[1:2])
    assert_close_to_scale(nxt, with_noise.x_t[1:2])


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


def test_subset_of_points_per_trajectory(teacher):
    conds = teacher.encoder.encode(["a handwritten digit 4", "a handwritten digit 5"])
    cfg = TrajectoryConfig(route_points=8, points_per_trajectory=3)
    src = TrajectoryPairSource(teacher, conds, [4.0], (1, 8, 8), cfg, generator=torch.Generator().manual_seed(0))
    pairs = src.sample(torch.tensor([0, 1]))
    assert len(pairs) == 2 * 3
    t = pairs.t.reshape(2, 3)
    assert torch.all(t[:, 1:] < t[:, :-1])  # still in route order
    assert torch.equal(pairs.prompt_ids, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert_close_to_scale(pairs.u, teacher.velocity(pairs.x_t, pairs.t, pairs.cond, pairs.w))


def test_renoised_points_forward_noise_the_trajectorys_own_final_sample(teacher):
    conds = teacher.encoder.encode(["a handwritten digit 4", "a handwritten digit 5"])
    k, m = 6, 4
    cfg = TrajectoryConfig(route_points=k, renoised_points=m)
    src = TrajectoryPairSource(teacher, conds, [4.0], (1, 8, 8), cfg, generator=torch.Generator().manual_seed(0))
    pairs = src.sample(torch.tensor([0, 1]))
    assert len(pairs) == 2 * (k - 1) + 2 * m and src.teacher_calls == 2 * k + 2 * m
    on_route = pairs.t[: 2 * (k - 1)].reshape(2, k - 1)
    x_last = pairs.x_t[: 2 * (k - 1)].reshape(2, k - 1, 1, 8, 8)[:, -1]
    u_last = pairs.u[: 2 * (k - 1)].reshape(2, k - 1, 1, 8, 8)[:, -1]
    t_last = on_route[:, -1].view(2, 1, 1, 1)
    final = torch.cos(t_last) * x_last - torch.sin(t_last) * u_last  # the rollout's exact last step to t = 0
    x_t, t = pairs.x_t[2 * (k - 1):], pairs.t[2 * (k - 1):]
    for i in range(2 * m):  # each angle is one of its own trajectory's route points
        assert torch.isclose(on_route[i // m], t[i]).any()
    assert torch.equal(pairs.prompt_ids[2 * (k - 1):], torch.tensor([0] * m + [1] * m))
    tb = t.view(-1, 1, 1, 1)
    eps = (x_t - torch.cos(tb) * final.repeat_interleave(m, 0)) / (torch.sin(tb) * teacher.sigma_d)
    assert abs(float(eps.mean())) < 0.15 and 0.85 < float(eps.std()) < 1.15  # forward noise, N(0, 1)
    assert_close_to_scale(pairs.u, teacher.velocity(pairs.x_t, pairs.t, pairs.cond, pairs.w))


def test_renoised_max_angle_re_noises_only_the_route_points_at_or_below_it(teacher):
    conds = teacher.encoder.encode(["a handwritten digit 4", "a handwritten digit 5"])
    k, m, limit = 16, 6, 0.4
    cfg = TrajectoryConfig(route_points=k, renoised_points=m, renoised_max_angle=limit)
    src = TrajectoryPairSource(teacher, conds, [4.0], (1, 8, 8), cfg, generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(5):
        pairs = src.sample(torch.tensor([0, 1]))
        on_route = pairs.t[: 2 * (k - 1)].reshape(2, k - 1)
        t = pairs.t[2 * (k - 1):].reshape(2, m)
        for i in range(2):
            low = on_route[i][on_route[i] <= limit]
            assert len(low) >= 2  # the official route of 16 has about three points below 0.4 rad
            for a in t[i]:  # each a route point of its own trajectory at or below the limit
                assert torch.isclose(low, a).any()
                seen.add(int((low - a).abs().argmin()))
    assert len(seen) >= 2  # not always the same point
    # no point that low: the trajectory's lowest point
    lowest = TrajectoryPairSource(teacher, conds, [4.0], (1, 8, 8),
                                  TrajectoryConfig(route_points=k, renoised_points=m, renoised_max_angle=1e-6),
                                  generator=torch.Generator().manual_seed(0)).sample(torch.tensor([0, 1]))
    last = lowest.t[: 2 * (k - 1)].reshape(2, k - 1)[:, -1]
    assert torch.equal(lowest.t[2 * (k - 1):], last.repeat_interleave(m))
