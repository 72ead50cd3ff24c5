"""The flow-to-TrigFlow adapter against a closed form: Gaussian data, whose exact velocity fields
are known in both parameterisations; guidance; the student's initialisation."""

import copy
import math

import torch
from torch import nn

from tbcm.models.adapter import TrigFlowAdapter, guided_F
from tbcm.models.student import Student
from tbcm.models.condition import TextCondition

from tests.conftest import assert_close_to_scale, tiny_encoder, tiny_network

MU, S = 0.3, 0.7  # flow-space data x0_flow ~ N(MU, S^2) per pixel
SD = 0.5


class GaussianFlowVelocity(nn.Module):
    """Exact flow velocity E[n - x0 | x_tau] for x0 ~ N(MU, S^2), n ~ N(0, 1); timestep = 1000 tau."""

    def forward(self, x, timestep, cond, guidance=None):
        tau = (timestep / 1000).reshape(-1, *([1] * (x.ndim - 1)))
        var = (1 - tau) ** 2 * S**2 + tau**2
        resid = x - (1 - tau) * MU
        e_x0 = MU + (1 - tau) * S**2 / var * resid
        e_n = tau / var * resid
        scale = 1.0 if cond is None else cond  # a "prompt" that scales the velocity, for CFG
        return scale * (e_n - e_x0)


def exact_trigflow_F(x_t, t):
    """E[(cos t Z - sin t X0) / sigma_d | x_t] for X0 = SD x0_flow, Z ~ N(0, SD^2): derived in
    TrigFlow variables only, independently of the flow parameterisation."""
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    m, big_s2 = SD * MU, (SD * S) ** 2
    var = c**2 * big_s2 + s**2 * SD**2
    resid = x_t - c * m
    e_x0 = m + c * big_s2 / var * resid
    e_z = s * SD**2 / var * resid
    return (c * e_z - s * e_x0) / SD


def test_adapter_reproduces_the_exact_trigflow_velocity_of_gaussian_data():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=torch.float64) * (math.pi / 2 - 0.02) + 0.01
    x_t = torch.randn(64, 5, generator=g, dtype=torch.float64) * 0.6
    F = TrigFlowAdapter(GaussianFlowVelocity())(x_t / SD, t, None)
    assert torch.allclose(F, exact_trigflow_F(x_t, t), atol=1e-10)


def test_guidance_in_F_equals_guidance_in_v():
    adapter = TrigFlowAdapter(GaussianFlowVelocity())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64)
    w = torch.tensor([0.0, 1.0, 2.0, 3.5, 4.5, 7.0], dtype=torch.float64)

    def F_fn(xx, tt, cond):  # cond here is a per-sample velocity scale standing in for a prompt
        return adapter(xx, tt, cond.embeds[:, :, 0])

    cond = TextCondition(torch.full((6, 1, 1), 2.0, dtype=torch.float64), torch.ones(6, 1))
    null = TextCondition(torch.full((1, 1, 1), 0.5, dtype=torch.float64), torch.ones(1, 1))
    guided = guided_F(F_fn, x, t, cond, null, w)
    # guide the velocity itself, then convert once
    from tbcm.trigflow import flow_input_from_trig, flow_time_from_angle, trig_F_from_flow_velocity

    x_flow = flow_input_from_trig(x, t)
    v_net = GaussianFlowVelocity()
    v_c = v_net(x_flow, 1000 * flow_time_from_angle(t), 2.0)
    v_n = v_net(x_flow, 1000 * flow_time_from_angle(t), 0.5)
    v_guided = v_n + w[:, None] * (v_c - v_n)
    assert torch.allclose(guided, trig_F_from_flow_velocity(x_flow, v_guided, t), atol=1e-10)


def test_student_starts_as_the_teachers_conditional_F_and_depends_on_w_once_trained():
    teacher_net, enc = tiny_network(), tiny_encoder()
    student = Student(teacher_net.with_guidance_embed(), sigma_d=SD)
    teacher_F = TrigFlowAdapter(teacher_net)
    cond = enc.encode(["a handwritten digit 3", "a handwritten digit 8"])
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1.4, 0.3])
    with torch.no_grad():
        assert_close_to_scale(student(x, t, cond, torch.tensor([4.0, 5.0])), teacher_F(x, t, cond))
        # a non-zero guidance embedder makes the output depend on w
        nn.init.normal_(student.network.guidance_embed.mlp[-1].weight, std=0.5)
        a = student(x, t, cond, torch.tensor([4.0, 4.0]))
        b = student(x, t, cond, torch.tensor([5.0, 5.0]))
    assert not torch.allclose(a, b)
    assert torch.equal(student.logvar(t), torch.zeros(2))  # logvar head starts at 0


def test_the_checked_start_measures_the_student_against_the_teacher_and_refuses_a_mistimed_one(tiny_teacher_dir):
    import pytest

    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller
    from tbcm.train.start_check import start_error
    from tbcm.errors import UserError

    d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "prompts_per_step=2",
                                                    "pairs.route_points=4", "threads=1"]))
    before = copy.deepcopy(d.source.state_dict())
    assert d.check_start() < 1e-5  # the same network, the guidance embedder at zero
    after = d.source.state_dict()
    assert torch.equal(before["generator"], after["generator"])  # training will see the same pairs
    d.student.F.timestep_scale = 1.0  # the student now reads tau where the teacher reads 1000 tau
    assert start_error(d) > 0.01
    with pytest.raises(UserError, match="teacher_time_multiplier"):
        d.check_start()
