"""The baseline pair sources (`forward`, `teacher_x0`): same objective, only the pairs differ."""

import math

import torch

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller

from .conftest import assert_close_to_scale

SMALL = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "optim.warmup_steps=0", "threads=1"]


def test_forward_source_noises_real_digits_with_logit_normal_times(tiny_teacher_dir):
    d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "source=forward", *SMALL]))
    src = d.source
    assert src.x0.shape == (1197, 1, 8, 8)  # the train split of sklearn's digits (no FID reference), in TrigFlow space
    assert torch.allclose(src.x0.abs().max(), torch.tensor(d.sigma_d))
    pairs = src.next_pairs(2)
    assert len(pairs) == 2 * 3  # as many pairs per step as the trajectory source
    assert torch.all((pairs.t > 0) & (pairs.t < math.pi / 2))
    # the tangent is the guided teacher velocity at the noised state (one call per pair)
    again = d.teacher.velocity(pairs.x_t, pairs.t, pairs.cond, pairs.w)
    assert_close_to_scale(pairs.u, again)
    # log(sigma_d tan t) ~ N(p_mean, p_std^2)
    log_sigma = torch.log(d.sigma_d * torch.tan(src.sample_times(20000)))
    assert abs(float(log_sigma.mean()) - 0.2) < 0.05 and abs(float(log_sigma.std()) - 1.6) < 0.05
    # x_t = cos t x0 + sin t z: the residual z has std sigma_d
    x0 = src.x0[pairs.prompt_ids]
    tb = pairs.t.reshape(-1, 1, 1, 1)
    z = (pairs.x_t - torch.cos(tb) * x0) / torch.sin(tb)
    assert 0.35 < float(z.std()) < 0.65
    assert d.train_step()["skipped"] == 0


def test_teacher_x0_pool_counts_its_teacher_calls(tiny_teacher_dir):
    d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "source=teacher_x0",
                                                    "forward.pool_size=12", "forward.pool_steps=3", *SMALL]))
    assert d.source.x0.shape == (12, 1, 8, 8) and d.source.teacher_calls == 36
    stats = d.train_step()
    assert stats["teacher_calls"] == 36 + 2 * 3 and stats["skipped"] == 0
