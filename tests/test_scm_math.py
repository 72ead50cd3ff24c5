"""The sCM target against independent mathematics, not against a re-typed formula:

* with r = 1 and no normalisation, g is cos t times the total derivative of the student's
  consistency function along the teacher's ODE, taken by finite differences of ``consistency_fn``
  over small ``trig_step``s;
* on Gaussian data the exact consistency function is known in closed form, and g vanishes there;
* the finite-difference JVP backend gives the autograd backend's loss gradient;
* under bf16 the residual with r = 0 and g = 0 is zero (one forward's rounding, not two);
* the EMA equals the closed-form decay sum after k updates.
"""

import math

import torch
from torch import nn

from tbcm.ema import EMA
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.objectives.scm import SCMConfig, jvp_autograd, scm_loss, scm_tangent
from tbcm.pairs.base import Pairs
from tbcm.trigflow import consistency_fn, trig_step

from .conftest import tiny_encoder, tiny_network

SD = 0.5


def _student64(seed=0):
    net = tiny_network(guidance=True, seed=seed)
    with torch.no_grad():
        nn.init.normal_(net.guidance_embed.mlp[-1].weight, std=0.3)
    return Student(net, sigma_d=SD).double()


def _teacher64():
    teacher = Teacher(tiny_network(seed=5), tiny_encoder(), SD)
    teacher.F.double()
    teacher.null_cond = teacher.null_cond.apply(lambda z: z.double())
    return teacher


def _cond64(n):
    c = tiny_encoder().encode([f"a handwritten digit {d % 10}" for d in range(n)])
    return c.apply(lambda z: z.double())


def test_g_is_cos_t_times_the_derivative_of_the_consistency_function_along_the_teacher_ode():
    student, teacher = _student64(), _teacher64()
    n = 3
    g = torch.Generator().manual_seed(0)
    cond, w = _cond64(n), torch.tensor([1.5, 3.0, 4.5], dtype=torch.float64)
    x = SD * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 0.9, 1.4], dtype=torch.float64)
    u = teacher.velocity(x, t, cond, w)

    def f(xx, tt):  # the student's consistency function f(x, t) = cos t x - sin t sigma_d F
        with torch.no_grad():
            return consistency_fn(xx, tt, student(xx / SD, tt, cond, w), SD)

    # the sCM target as the trainer builds it: F- and its JVP along (cos sin u / sd, cos sin)
    cs = torch.cos(t) * torch.sin(t)
    F_minus, dF = jvp_autograd(lambda xx, tt: student(xx, tt, cond, w), (x / SD, t),
                               (cs.view(-1, 1, 1, 1) * u / SD, cs))
    g_scm = scm_tangent(F_minus, dF, x, u, t, SD, r=1.0)

    def fd(h):  # central difference of f along the ODE; the first-order steps' h^2 errors cancel
        x_up, x_down = trig_step(x, u, t, t + h), trig_step(x, u, t, t - h)
        return torch.cos(t).view(-1, 1, 1, 1) * (f(x_up, t + h) - f(x_down, t - h)) / (2 * h)

    def err(h):
        return float((fd(h) - g_scm).norm() / g_scm.norm())

    assert float(g_scm.norm()) > 1e-2  # a random student is far from consistent
    # O(h^2): the finite difference converges to g (the 1000 tau time features make the constant large)
    assert err(1e-6) < 1e-6
    assert 50 < err(1e-4) / err(1e-5) < 200


class GaussianConsistencyF(nn.Module):
    """The exact TrigFlow F for data x0 ~ N(0, s^2 I): the PF-ODE maps x_t to x0 = s x_t / v(t),
    v(t)^2 = cos^2 t s^2 + sin^2 t sigma_d^2, so F = (cos t x_t - s x_t / v(t)) / (sin t sigma_d)."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x_norm, t, cond, w, with_logvar=False):
        tb = t.view(-1, 1, 1, 1)
        v = torch.sqrt(torch.cos(tb) ** 2 * self.s**2 + torch.sin(tb) ** 2 * SD**2)
        x = SD * x_norm
        F = (torch.cos(tb) * x - self.s * x / v) / (torch.sin(tb) * SD)
        return (F, torch.zeros_like(t)) if with_logvar else F


def test_g_vanishes_for_the_exact_consistency_function_of_gaussian_data():
    s = 0.8  # data scale != sigma_d, so the exact F is not trivial
    exact = GaussianConsistencyF(s)
    g = torch.Generator().manual_seed(1)
    n = 6
    t = torch.linspace(0.05, 1.55, n, dtype=torch.float64)
    tb = t.view(-1, 1, 1, 1)
    v = torch.sqrt(torch.cos(tb) ** 2 * s**2 + torch.sin(tb) ** 2 * SD**2)
    x = v * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)  # samples of the marginal at t
    dv = torch.sin(tb) * torch.cos(tb) * (SD**2 - s**2) / v
    u = x * dv / v  # the exact PF-ODE velocity: x_t scales with v(t)
    # the exact x0 of the closed form is consistent with the ODE velocity it implies
    cs = torch.cos(t) * torch.sin(t)
    F_minus, dF = jvp_autograd(lambda xx, tt: exact(xx, tt, None, None), (x / SD, t),
                               (cs.view(-1, 1, 1, 1) * u / SD, cs))
    g_exact = scm_tangent(F_minus, dF, x, u, t, SD, r=1.0)
    assert float(g_exact.abs().max()) < 1e-12 * float(x.abs().max())
    # a wrong data scale is not consistent: the check can fail
    F_w, dF_w = jvp_autograd(lambda xx, tt: GaussianConsistencyF(0.6)(xx, tt, None, None), (x / SD, t),
                             (cs.view(-1, 1, 1, 1) * u / SD, cs))
    assert float(scm_tangent(F_w, dF_w, x, u, t, SD, r=1.0).abs().max()) > 1e-3
    # and the loss built on it has the logvar-only value at the exact solution: residual 0
    pairs = Pairs(x, t, u, None, torch.zeros(n, dtype=torch.float64), torch.ones(n))
    _, stats = scm_loss(exact, pairs, SD, 1.0, SCMConfig(tangent_norm_c=0.1))
    assert float(stats["mse"]) < 1e-20


def _pairs64(n=4, seed=0):
    teacher = _teacher64()
    g = torch.Generator().manual_seed(seed)
    cond, w = _cond64(n), torch.linspace(1.0, 5.0, n, dtype=torch.float64)
    x = SD * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.linspace(0.2, 1.5, n, dtype=torch.float64)
    return Pairs(x, t, teacher.velocity(x, t, cond, w), cond, w, torch.ones(n, dtype=torch.float64))


def test_finite_difference_backend_gives_the_autograd_backends_loss_gradient():
    pairs = _pairs64()
    grads = []
    for backend in ("autograd", "finite_difference"):
        student = _student64()
        cfg = SCMConfig(jvp=backend, fd_eps=1e-5, prior_weight=True, tangent_norm="l2")
        loss, _ = scm_loss(student, pairs, SD, 0.7, cfg)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None]))
    assert float(grads[0].norm()) > 1e-3
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-6


def test_bf16_residual_with_zero_target_is_zero():
    """r = 0 and g forced to 0 (u = sigma_d F- makes the first term vanish): the residual
    F_bf16 - sg(F_bf16) is exactly zero; against the fp32 JVP's F- it would be bf16 rounding."""
    student = _student64().float()
    n = 4
    cond = tiny_encoder().encode([f"a handwritten digit {d}" for d in range(n)])
    w = torch.full((n,), 3.0)
    x, t = SD * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.linspace(0.3, 1.4, n)
    with torch.no_grad():
        u = SD * student(x / SD, t, cond, w)  # so that g = -cos^2 t (sd F- - u) = 0 at r = 0
    pairs = Pairs(x, t, u, cond, w, torch.ones(n))
    loss, stats = scm_loss(student, pairs, SD, 0.0, SCMConfig(tangent_norm_c=0.1), bf16=True)
    assert float(stats["mse"]) == 0.0
    # the two forwards do differ under bf16: comparing with the JVP's F- would have left a bias
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        F_bf16 = student(x / SD, t, cond, w).float()
    assert float((F_bf16 - u / SD).abs().max()) > 1e-4


def test_ema_equals_the_closed_form_decay_sum():
    d, k = 0.9, 5
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    module = nn.Module()
    module.p = p
    ema = EMA(module, d)
    values = [torch.tensor([float(i), 0.5 * i], dtype=torch.float64) for i in range(1, k + 1)]
    for v in values:
        with torch.no_grad():
            p.copy_(v)
        ema.update(module)
    # shadow_k = d^k p_0 + sum_i (1 - d) d^(k - i) p_i
    expected = d**k * torch.tensor([1.0, -2.0], dtype=torch.float64)
    for i, v in enumerate(values, start=1):
        expected = expected + (1 - d) * d ** (k - i) * v
    assert torch.allclose(ema.shadow["p"], expected, rtol=1e-12, atol=0)
    assert not math.isclose(float(ema.shadow["p"][0]), float(values[-1][0]))
