"""docs/own_network.py: a user's own velocity network distilled with the library API.

The convention it states (x_tau = (1 - tau) x0 + tau noise, v = noise - x0) is checked against
the exact velocity of a point mass, whose ODE ends on the point from any noise."""

import importlib.util
import math
from pathlib import Path

import torch
from torch import nn

from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.objectives.scm import jvp_autograd
from tbcm.sampling import teacher_sample

spec = importlib.util.spec_from_file_location("own_network", Path(__file__).resolve().parents[1] / "docs" / "own_network.py")
own = importlib.util.module_from_spec(spec)
spec.loader.exec_module(own)


class PointMass(nn.Module):
    """Data = the point ``c = cond.reshape(image)``: the exact flow velocity is ``(x - c) / tau``."""

    def forward(self, x, tau, cond):
        return (x - cond.reshape(x.shape)) / tau.reshape(-1, 1, 1, 1)


def test_the_stated_convention_is_the_one_tbcm_integrates():
    c = torch.randn(4)
    encoder = own.ConditionTable({"point": c})
    teacher = Teacher(own.OwnNetwork(PointMass(), 4), encoder, sigma_d=0.5, timestep_scale=1.0)
    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    # w = 1: the conditional velocity alone; the ODE runs to t = 0 but the network is never called at tau = 0
    x0 = teacher_sample(teacher, encoder.encode(["point"]), torch.ones(1), noise, steps=8)
    torch.testing.assert_close(x0 / 0.5, c.reshape(1, 1, 2, 2), atol=1e-5, rtol=1e-5)


def test_the_untrained_student_is_the_teacher_and_has_a_jvp():
    torch.manual_seed(0)
    table = {f"class {i}": torch.randn(8) for i in range(2)}
    encoder, wrapped = own.ConditionTable(table), own.OwnNetwork(own.ToyVelocity(), 8)
    cond = encoder.encode(list(table))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 1.1])
    teacher = Teacher(wrapped, encoder, 0.5, timestep_scale=1.0)
    student = Student(wrapped.with_guidance_embed(), 0.5, timestep_scale=1.0)
    with torch.no_grad():
        for w in (1.0, 4.0):
            torch.testing.assert_close(student(x, t, cond, torch.full((2,), w)), teacher.F(x, t, cond))
    _, dF = jvp_autograd(lambda xx, tt: student(xx, tt, cond, torch.full((2,), 2.0)), (x, t),
                         (torch.ones_like(x), torch.ones_like(t)))
    assert bool(torch.isfinite(dF).all()) and float(dF.abs().max()) > 0


def test_the_example_distils_and_generates():
    torch.manual_seed(0)
    table = {f"class {i}": torch.randn(8) for i in range(3)}
    encoder = own.ConditionTable(table)
    net = own.ToyVelocity()
    before = [p.detach().clone() for p in net.parameters()]
    student = own.distill(net, encoder, list(table), (1, 8, 8), steps=4, prompts_per_step=2, lr=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the teacher is untouched
    assert any(not torch.equal(a, b) for a, b in zip(before, student.network.net.parameters()))
    assert any(float(p.detach().abs().max()) > 0 for p in student.network.guidance[-1].parameters())  # w is learned
    images = own.generate(student, encoder, list(table), (1, 8, 8), steps=2)
    assert images.shape == (3, 1, 8, 8) and bool(torch.isfinite(images).all())
    assert math.isfinite(float(images.std()))
