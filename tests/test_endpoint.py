"""The trajectory-endpoint term (objective.endpoint_weight) inside the distiller: the pairs carry
their trajectory ends, the term changes the update, and bad settings are refused in one line."""

import math

import pytest
import torch

from tbcm.config import DistillConfig, load_config
from tbcm.distill import Distiller
from tbcm.errors import UserError

BASE = ["prompts_per_step=2", "pairs.route_points=4", "pairs.pool_prompts=4", "threads=1", "text_cache=none",
        "optim.warmup_steps=0", "start_check_max_error=0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _distiller(teacher_dir, *extra) -> Distiller:
    return Distiller(load_config(DistillConfig, None, [f"teacher={teacher_dir}", *BASE, *extra]))


def test_the_endpoint_term_trains_on_each_pairs_own_trajectory_end(tiny_teacher_dir):
    # without the pool, pairs come in trajectory order: 3 per trajectory (K - 1), each carrying
    # the end of its own trajectory
    pairs = _distiller(tiny_teacher_dir, "objective.endpoint_weight=1.0", "pairs.pool_prompts=0").source.next_pairs(2)
    assert pairs.x0 is not None and pairs.x0.shape == pairs.x_t.shape
    assert torch.equal(pairs.x0[0], pairs.x0[2]) and not torch.equal(pairs.x0[0], pairs.x0[3])
    on = _distiller(tiny_teacher_dir, "objective.endpoint_weight=1.0")
    off = _distiller(tiny_teacher_dir, "objective.endpoint_weight=0")
    assert on.source.next_pairs(2).x0 is not None and off.source.next_pairs(2).x0 is None
    s_on, s_off = on.train_step(), off.train_step()
    assert math.isfinite(s_on["endpoint"]) and s_on["endpoint"] > 0 and "endpoint" not in s_off
    # same seed, same pairs: only the term tells the two updates apart
    diff = [not torch.equal(a, b) for a, b in zip(on.student.parameters(), off.student.parameters())]
    assert any(diff)


def test_endpoint_config_errors(tiny_teacher_dir):
    with pytest.raises(UserError, match="objective.endpoint_weight"):
        _distiller(tiny_teacher_dir, "objective.endpoint_weight=-1")
    with pytest.raises(UserError, match="objective.endpoint_weight"):
        _distiller(tiny_teacher_dir, "objective.endpoint_weight=0.5", "source=forward")
    with pytest.raises(UserError, match="objective.endpoint_min_angle"):
        _distiller(tiny_teacher_dir, "objective.endpoint_weight=0.5", "objective.endpoint_min_angle=1.6")
    with pytest.raises(UserError, match="objective.endpoint_min_angle"):  # a window on a term that is off
        _distiller(tiny_teacher_dir, "objective.endpoint_weight=0", "objective.endpoint_min_angle=1.45")
    with pytest.raises(UserError, match="pairs.noise_point"):
        _distiller(tiny_teacher_dir, "objective.endpoint_weight=0", "pairs.noise_point=true")


def test_noise_point_trains_the_1_step_map_at_pi_over_2(tiny_teacher_dir):
    # the pool serves pure-noise pairs too (K per trajectory), and a step with them is finite
    d = _distiller(tiny_teacher_dir, "objective.endpoint_weight=1.0", "objective.endpoint_min_angle=1.5707",
                   "pairs.noise_point=true")
    pairs = d.source.next_pairs(2)
    assert len(pairs) == 2 * 4 and int((pairs.t >= math.pi / 2 - 1e-6).sum()) >= 1
    stats = d.train_step()
    assert math.isfinite(stats["loss"]) and stats["endpoint"] > 0
