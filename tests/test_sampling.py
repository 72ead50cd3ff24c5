"""The few-step student sampler: fresh re-noising (sCM) and the implied-noise mix."""

import math

import torch
from torch import nn

from tbcm.sampling import student_sample
from tbcm.trigflow import consistency_fn

SD = 0.5


class ConstantF(nn.Module):
    """F = a fixed tensor: the consistency function is then known in closed form at every state."""

    sigma_d = SD

    def __init__(self, F):
        super().__init__()
        self.F = F

    def forward(self, x_norm, t, cond, w):
        return self.F.expand_as(x_norm)


def _run(fresh, seed=0):
    F = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    angles = [math.pi / 2, 1.0, 0.0]
    return F, noise, angles, student_sample(ConstantF(F), None, torch.ones(2), noise, angles,
                                            generator=torch.Generator().manual_seed(seed), fresh_noise=fresh)


def test_fresh_noise_one_and_zero_by_hand():
    F, noise, (t0, t1, _), out = _run(1.0)
    x = SD * noise
    x0 = consistency_fn(x, torch.full((2,), t0), F.expand_as(x), SD)  # first prediction
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x1 = math.cos(t1) * x0 + math.sin(t1) * SD * eps  # fresh noise
    assert torch.allclose(out, consistency_fn(x1, torch.full((2,), t1), F.expand_as(x), SD), atol=1e-6)

    *_, kept = _run(0.0)
    implied = (x - math.cos(t0) * x0) / (math.sin(t0) * SD)  # at pi/2 this is the initial noise itself
    implied = implied / implied.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    x1 = math.cos(t1) * x0 + math.sin(t1) * SD * implied
    assert torch.allclose(kept, consistency_fn(x1, torch.full((2,), t1), F.expand_as(x), SD), atol=1e-6)
    # without fresh noise the later steps do not depend on the generator
    assert torch.equal(_run(0.0, seed=5)[-1], kept) and not torch.equal(_run(1.0, seed=5)[-1], out)


def test_explicit_routes_replace_the_shifted_route_for_their_step_count_only():
    import pytest

    from tbcm.errors import UserError
    from tbcm.sampler import StudentSampler
    from tbcm.sampling import parse_routes, student_angles
    from tbcm.trigflow import sampling_angles

    routes = parse_routes("4:0.337/0.06/0.02, 3:0.5/0.1")
    assert routes == {4: [0.337, 0.06, 0.02], 3: [0.5, 0.1]}
    assert student_angles(4, 0.35, routes) == [math.pi / 2, 0.337, 0.06, 0.02, 0.0]
    assert student_angles(4, 0.35, {"4": [0.337, 0.06, 0.02]}) == student_angles(4, 0.35, routes)  # saved keys
    assert student_angles(2, 0.35, routes) == sampling_angles(2, 0.35)  # not listed: the shifted route
    assert abs(sampling_angles(2, 0.35)[1] - math.atan(0.35)) < 1e-9
    assert parse_routes("") == {} and parse_routes(" None ") == {}
    with pytest.raises(UserError, match="route for 4 steps"):  # a saved route read back is checked too
        StudentSampler.from_extra({"routes": {"4": [0.06, 0.337, 0.02]}})
    for bad in ("4:0.3/0.2", "4:0.1/0.2/0.05", "3:1.6/0.1", "3:0.5/0", "x:0.3", "4:a/b/c", "1:"):
        with pytest.raises(UserError, match="route"):
            parse_routes(bad)
