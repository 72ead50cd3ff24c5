"""The sCM objective: JVP backends against finite differences, the loss and its gradient on a
hand-computed case, and the tangent warmup / calm-down schedule."""

import math

import pytest
import torch
from torch import nn

from tbcm.models.student import Student
from tbcm.models.condition import TextCondition
from tbcm.objectives.scm import SCMConfig, jvp_autograd, jvp_finite_difference, scm_loss, tangent_ratio
from tbcm.pairs.base import Pairs

from .conftest import tiny_encoder, tiny_network


def _student64():
    net = tiny_network(guidance=True)
    with torch.no_grad():
        nn.init.normal_(net.guidance_embed.mlp[-1].weight, std=0.3)  # make w matter
    return Student(net, sigma_d=0.5).double()


def _cond64(n):
    c = tiny_encoder().encode([f"a handwritten digit {d % 10}" for d in range(n)])
    return TextCondition(c.embeds.double(), c.mask.double())


def test_forward_mode_jvp_matches_central_finite_differences_through_the_student():
    student = _student64()
    g = torch.Generator().manual_seed(0)
    n = 4
    cond, w = _cond64(n), torch.tensor([3.0, 4.0, 4.5, 5.0], dtype=torch.float64)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7, 1.1, 1.5], dtype=torch.float64)
    tx, tt = torch.randn(x.shape, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    fn = lambda xx, ttt: student(xx, ttt, cond, w)  # noqa: E731
    out, dout = jvp_autograd(fn, (x, t), (tx, tt))
    assert torch.allclose(out, fn(x, t), atol=1e-12)
    assert float(dout.abs().max()) > 1e-1  # a non-trivial derivative

    def fd_error(h):
        with torch.no_grad():
            fd = (fn(x + h * tx, t + h * tt) - fn(x - h * tx, t - h * tt)) / (2 * h)
        return float((dout - fd).norm() / dout.norm())

    # central differences converge to the true derivative as h^2: the JVP is that limit
    assert fd_error(1e-6) < 1e-6
    assert 50 < fd_error(1e-4) / fd_error(1e-5) < 200


def test_finite_difference_backend_agrees_with_autograd_in_float32():
    student = _student64().float()
    cond = tiny_encoder().encode(["a handwritten digit 1", "a handwritten digit 9"])
    w = torch.tensor([4.0, 5.0])
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.4, 1.2])
    tx, tt = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.5])
    fn = lambda xx, ttt: student(xx, ttt, cond, w)  # noqa: E731
    _, d_ad = jvp_autograd(fn, (x, t), (tx, tt))
    _, d_fd = jvp_finite_difference(fn, (x, t), (tx, tt), eps=1e-3)
    # fp32 central differences: O(eps^2) truncation plus O(1e-7 |F| / eps) rounding
    assert float((d_ad - d_fd).norm() / d_ad.norm()) < 3e-2


class LinearStudent(nn.Module):
    """F(x_norm, t) = a x_norm + b t, constant logvar: small enough to differentiate by hand."""

    def __init__(self, a, b, lv):
        super().__init__()
        self.a, self.b, self.lv = (nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in (a, b, lv))

    def forward(self, x_norm, t, cond, w, with_logvar=False):
        F = self.a * x_norm + self.b * t.reshape(-1, 1)
        return (F, self.lv.expand(t.shape[0])) if with_logvar else F


@pytest.mark.parametrize("prior_weight", [False, True])
def test_scm_loss_and_gradient_on_a_hand_computed_case(prior_weight):
    a, b, lv, sd, r, c = 0.8, -0.3, 0.25, 0.5, 0.6, 0.1
    xs = [[0.3, -0.5], [1.1, 0.2]]
    us = [[0.7, 0.1], [-0.4, 0.9]]
    ts = [0.4, 1.2]
    mask = [1.0, 1.0]
    student = LinearStudent(a, b, lv)
    pairs = Pairs(torch.tensor(xs, dtype=torch.float64), torch.tensor(ts, dtype=torch.float64),
                  torch.tensor(us, dtype=torch.float64), None, torch.zeros(2), torch.tensor(mask))
    cfg = SCMConfig(tangent_norm_c=c, prior_weight=prior_weight)
    loss, _ = scm_loss(student, pairs, sd, r, cfg)
    loss.backward()

    # by hand, element by element
    total, grad_a, grad_lv = 0.0, 0.0, 0.0
    for x_row, u_row, t in zip(xs, us, ts):
        co, si = math.cos(t), math.sin(t)
        g = []
        for x, u in zip(x_row, u_row):
            F_minus = a * x / sd + b * t
            dF = a * co * si * u / sd + b * co * si
            g.append(-co**2 * (sd * F_minus - u) - r * (co * si * x + sd * dF))
        rms = math.sqrt(sum(v * v for v in g) / len(g))
        g = [v / (rms + c) for v in g]
        weight = 1 / (sd * math.tan(t)) if prior_weight else 1.0
        per = sum(v * v for v in g) / len(g)  # F == F- in value, so the residual is -g
        total += math.exp(-lv) * weight * per + lv
        # d/da of mean((F - F- - g)^2) with F- and g held fixed: mean(2 * (-g) * x / sd)
        grad_a += math.exp(-lv) * weight * sum(-2 * v * x / sd for v, x in zip(g, x_row)) / len(g)
        grad_lv += -math.exp(-lv) * weight * per + 1
    assert abs(loss.item() - total / 2) < 1e-12
    assert abs(float(student.a.grad) - grad_a / 2) < 1e-12
    assert abs(float(student.lv.grad) - grad_lv / 2) < 1e-12


def test_masked_pairs_do_not_count():
    student = LinearStudent(0.5, 0.1, 0.0)
    x = torch.tensor([[0.3, -0.5], [1.1, 0.2]], dtype=torch.float64)
    u = torch.tensor([[0.7, 0.1], [-0.4, 0.9]], dtype=torch.float64)
    t = torch.tensor([0.4, 1.2], dtype=torch.float64)
    both, _ = scm_loss(student, Pairs(x, t, u, None, torch.zeros(2), torch.tensor([1.0, 0.0])), 0.5, 1.0, SCMConfig())
    first, _ = scm_loss(student, Pairs(x[:1], t[:1], u[:1], None, torch.zeros(1), torch.ones(1)), 0.5, 1.0, SCMConfig())
    assert abs(both.item() - first.item()) < 1e-12


def test_tangent_warmup_and_calm_down():
    cfg = SCMConfig(warmup_steps=100, calm_down_start=1000, calm_down_end=1200, calm_down_to=0.75)
    assert tangent_ratio(0, cfg) == 0.0
    assert tangent_ratio(50, cfg) == 0.5
    assert tangent_ratio(100, cfg) == 1.0
    assert tangent_ratio(1000, cfg) == 1.0
    assert abs(tangent_ratio(1100, cfg) - 0.875) < 1e-12
    assert tangent_ratio(1200, cfg) == 0.75 and tangent_ratio(5000, cfg) == 0.75
    assert tangent_ratio(7, SCMConfig(warmup_steps=0)) == 1.0


def test_a_pure_noise_pair_carries_no_scm_term_but_counts_in_the_mean():
    # pair 2 at t = pi/2 (float32, as the route stores it): its sCM weight is zero there and its
    # logvar term would run to -inf alone, so it is masked out of the sum, not of the denominator
    a, b, lv, sd = 0.8, -0.3, 0.25, 0.5
    half_pi = float(torch.tensor(math.pi / 2, dtype=torch.float32))
    xs = torch.tensor([[0.3, -0.5], [1.1, 0.2]], dtype=torch.float64)
    us = torch.tensor([[0.7, 0.1], [-0.4, 0.9]], dtype=torch.float64)

    def loss_of(ts, n):
        pairs = Pairs(xs[:n], torch.tensor(ts, dtype=torch.float64), us[:n], None, torch.zeros(n), torch.ones(n))
        return scm_loss(LinearStudent(a, b, lv), pairs, sd, 1.0, SCMConfig())

    first_only, _ = loss_of([0.4], 1)
    both, stats = loss_of([0.4, half_pi], 2)
    assert abs(both.item() - first_only.item() / 2) < 1e-12 and math.isfinite(float(stats["mse"]))
