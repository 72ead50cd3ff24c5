"""TrigFlow conversions and routes against their closed forms."""

import math


import torch

from tbcm import trigflow as tf


def test_flow_time_and_angle_are_inverse_with_known_points():
    t = torch.linspace(0, math.pi / 2, 101, dtype=torch.float64)
    tau = tf.flow_time_from_angle(t)
    assert torch.allclose(tf.angle_from_flow_time(tau), t, atol=1e-12)
    at = lambda a: float(tf.flow_time_from_angle(torch.tensor(a, dtype=torch.float64)))  # noqa: E731
    assert abs(at(math.pi / 4) - 0.5) < 1e-12
    assert abs(at(math.pi / 2) - 1.0) < 1e-12
    assert at(0.0) == 0.0
    assert abs(at(math.atan(3.0)) - 0.75) < 1e-12  # tan t = tau / (1 - tau)


def test_state_conversion_matches_both_definitions():
    g = torch.Generator().manual_seed(0)
    sigma_d = 0.5
    x0_flow, n = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.rand(5, generator=g, dtype=torch.float64) * math.pi / 2
    tc, ts = torch.cos(t)[:, None], torch.sin(t)[:, None]
    x_t = tc * (sigma_d * x0_flow) + ts * (sigma_d * n)  # TrigFlow: z = sigma_d n
    tau = tf.flow_time_from_angle(t)[:, None]
    expected = (1 - tau) * x0_flow + tau * n  # flow state
    assert torch.allclose(tf.flow_input_from_trig(x_t / sigma_d, t), expected, atol=1e-12)


def test_F_from_exact_flow_velocity_is_the_trigflow_velocity():
    g = torch.Generator().manual_seed(1)
    x0, n = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    t = torch.rand(7, generator=g, dtype=torch.float64) * math.pi / 2
    tau = tf.flow_time_from_angle(t)[:, None]
    x_flow = (1 - tau) * x0 + tau * n
    F = tf.trig_F_from_flow_velocity(x_flow, n - x0, t)
    expected = torch.cos(t)[:, None] * n - torch.sin(t)[:, None] * x0
    assert torch.allclose(F, expected, atol=1e-12)


def test_consistency_fn_recovers_x0_from_the_exact_velocity():
    g = torch.Generator().manual_seed(2)
    sd = 0.5
    x0, z = torch.randn(6, 2, generator=g, dtype=torch.float64), sd * torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * math.pi / 2
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    x_t = c * x0 + s * z
    F = (c * z - s * x0) / sd
    assert torch.allclose(tf.consistency_fn(x_t, t, F, sd), x0, atol=1e-12)


def test_trig_step_is_exact_on_a_straight_path_and_equals_flow_euler():
    g = torch.Generator().manual_seed(3)
    sd = 0.5
    x0, z = torch.randn(4, 3, generator=g, dtype=torch.float64), sd * torch.randn(4, 3, generator=g, dtype=torch.float64)
    t, s = torch.tensor(1.2, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    x_t = torch.cos(t) * x0 + torch.sin(t) * z
    u = torch.cos(t) * z - torch.sin(t) * x0  # exact dx/dt for fixed (x0, z)
    assert torch.allclose(tf.trig_step(x_t, u, t, s), torch.cos(s) * x0 + torch.sin(s) * z, atol=1e-12)
    # Same step seen in flow space: Euler x_tau' = x_tau + (tau' - tau) v, v = n - x0_flow.
    tau, tau2 = tf.flow_time_from_angle(t), tf.flow_time_from_angle(s)
    x0f, n = x0 / sd, z / sd
    xf = (1 - tau) * x0f + tau * n
    euler = xf + (tau2 - tau) * (n - x0f)
    stepped = tf.trig_step(x_t, u, t, s) / sd / (torch.sin(s) + torch.cos(s))
    assert torch.allclose(stepped, euler, atol=1e-12)


def test_reference_route_closed_form():
    route = tf.reference_route(16, 2.5)
    assert route.shape == (16,) and route[0] == math.pi / 2
    assert torch.all(route[1:] < route[:-1]) and torch.all(route > 0)
    sigma = 1 - 1 / 16
    shifted = 2.5 * sigma / (1 + 1.5 * sigma)
    assert abs(float(route[1]) - math.atan(shifted / (1 - shifted))) < 1e-12
    assert abs(tf.sampling_angles(2, 2.5)[1] - math.atan(2.5)) < 1e-12  # sigma 0.5 -> 1.25/1.75
    assert tf.sampling_angles(1, 2.5) == [math.pi / 2, 0.0]


# hustvl/TBCM's compute_refer_route(shift=2.5, num_inference_steps=16), printed by the official code
OFFICIAL_K16 = [1.5708, 1.5423, 1.5095, 1.4714, 1.4268, 1.3741, 1.3112, 1.2356, 1.1440, 1.0331, 0.8997, 0.7425,
                0.5642, 0.3734, 0.1832, 0.0063]


def test_official_reference_route_matches_the_papers_angles():
    route = tf.official_reference_route(16, 2.5)
    assert torch.allclose(route, torch.tensor(OFFICIAL_K16, dtype=route.dtype), atol=1e-4)
    # the shift is applied twice: the last sigma is shift(shift(1/1000)), not shift(1/16)
    once = 2.5 * 0.001 / (1 + 1.5 * 0.001)
    twice = 2.5 * once / (1 + 1.5 * once)
    assert abs(float(route[-1]) - math.atan(twice / (1 - twice))) < 1e-12


def test_official_jitter_covers_the_interval_next_to_pi_over_2():
    ref = tf.official_reference_route(16, 2.5)
    r = tf.jitter_route_official(ref, torch.Generator().manual_seed(0), batch=2000)
    assert r.shape == (2000, 16) and torch.all(r[:, 0] == math.pi / 2)
    assert torch.all(r[:, 1:] < r[:, :-1])
    for j in range(1, 16):  # point j uniform in (ref[j], ref[j-1])
        lo, hi = float(ref[j]), float(ref[j - 1])
        assert torch.all(r[:, j] > lo) and torch.all(r[:, j] <= hi)
        assert abs(float(r[:, j].mean()) - (lo + hi) / 2) < 0.03 * (hi - lo)
    assert (r[:, 1] > 1.56).float().mean() > 0.3  # trained next to pi/2, where 1-step sampling evaluates
    assert float(r[:, 1:].min()) > 0.006  # and never below the official last angle: 1/tan t stays bounded
