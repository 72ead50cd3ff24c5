"""The student's sampler object: its angles, its overrides, and the one reading of a saved student."""

import math

import pytest
import torch

from tbcm.errors import UserError
from tbcm.sampler import StudentSampler
from tbcm.trigflow import official_reference_route


def test_angles_follow_the_shift_unless_a_route_is_given():
    s = StudentSampler(shift=2.5, routes={4: [0.9, 0.5, 0.2]})
    assert s.angles(1) == [math.pi / 2, 0.0]
    assert s.angles(2)[1] == pytest.approx(math.atan(2.5))  # the 2-step middle angle is arctan(shift)
    assert s.angles(4) == [math.pi / 2, 0.9, 0.5, 0.2, 0.0]
    shifted = s.overridden(shift=1.0)  # a shift alone asks for the shifted route at every count
    assert shifted.routes == {} and shifted.angles(2)[1] == pytest.approx(math.pi / 4)
    assert s.routes == {4: [0.9, 0.5, 0.2]}  # the original is untouched


def test_saved_and_read_back_through_plain_data():
    s = StudentSampler(cfg_scale=3, shift=0.25, fresh_noise=0.5, routes={4: [0.26, 0.25, 0.24]},
                       cfg_scales=[1, 2, 3], guidance_interval=[0, 0.5], teacher_route_points=8)
    data = s.to_dict()
    assert data["routes"] == {"4": [0.26, 0.25, 0.24]}
    assert StudentSampler.from_extra({"sampler": data}) == s


def test_a_student_saved_before_the_object_reads_its_old_keys():
    old = {"default_cfg_scale": 3.0, "shift": 0.25, "teacher_shift": 2.5, "fresh_noise": 0.5,
           "routes": {"4": [0.26, 0.25, 0.24]}, "cfg_scales": [1.0, 2.0, 3.0], "guidance_interval": [0.0, 0.5]}
    s = StudentSampler.from_extra(old)
    assert (s.cfg_scale, s.shift, s.fresh_noise, s.routes[4]) == (3.0, 0.25, 0.5, [0.26, 0.25, 0.24])
    assert s.guidance_interval == [0.0, 0.5] and s.cfg_scales == [1.0, 2.0, 3.0]
    bare = StudentSampler.from_extra({})  # the oldest students: fresh noise, the teacher's shift, w = 4.5
    assert (bare.cfg_scale, bare.shift, bare.fresh_noise, bare.routes) == (4.5, 2.5, 1.0, {})


@pytest.mark.parametrize("bad", [{"fresh_noise": 1.5}, {"shift": 0.0}, {"cfg_scale": -1},
                                 {"routes": {3: [0.2, 0.5]}}])
def test_bad_settings_are_one_line_errors(bad):
    with pytest.raises(UserError):
        StudentSampler(**bad)
    with pytest.raises(UserError, match="newer tbcm"):
        StudentSampler.from_dict({"cfg_scale": 1.0, "future_knob": 2})


def test_teacher_route_is_the_official_reference_route():
    s = StudentSampler(teacher_route_points=16, teacher_route_shift=2.5)
    assert torch.equal(s.teacher_route(), official_reference_route(16, 2.5))


def test_one_step_sample_is_the_consistency_function_at_pi_over_2():
    class Linear(torch.nn.Module):  # F(x/sigma_d) = 0.3 x/sigma_d: x0 = cos(pi/2) x - sin(pi/2) sigma_d F = -0.3 noise sigma_d
        sigma_d = 0.5

        def forward(self, x, t, cond, w):
            return 0.3 * x

    noise = torch.randn(3, 1, 4, 4)
    x0 = StudentSampler().sample(Linear(), None, noise, steps=1)
    torch.testing.assert_close(x0, -0.3 * 0.5 * noise, atol=1e-6, rtol=1e-6)
