"""The trajectory pool: every served pair is a real trajectory pair, served once, mixed across
trajectories; the pool survives an exact resume."""

import torch

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.pairs.pool import TrajectoryPool
from tbcm.pairs.prompts import PromptSampler
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

from .conftest import assert_close_to_scale

K = 5


def _pool(teacher_dir, pool_prompts=6, reuse=1):
    teacher = Teacher.from_bundle(load_bundle(str(teacher_dir), expect_kind="teacher"))
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    inner = TrajectoryPairSource(teacher, conds, [2.0, 4.0], (1, 8, 8), TrajectoryConfig(route_points=K),
                                 generator=torch.Generator().manual_seed(0), prompts=PromptSampler(10, seed=0))
    return teacher, TrajectoryPool(inner, pool_prompts, reuse, torch.Generator().manual_seed(1))


def test_pool_serves_real_pairs_once_mixed_across_trajectories(tiny_teacher_dir):
    teacher, pool = _pool(tiny_teacher_dir)
    first = pool.next_pairs(2)
    assert len(first) == 2 * (K - 1) and pool.teacher_calls == 6 * K  # one batched rollout of 6 prompts
    assert len(pool) == 6 * (K - 1) - len(first) and pool.pool_mb > 0
    served = [first] + [pool.next_pairs(2) for _ in range(2)]
    keys = [(float(p.t[i]), float(p.x_t[i].sum())) for p in served for i in range(len(p))]
    assert len(set(keys)) == len(keys) == 6 * (K - 1)  # the first refill's pairs, each served once
    assert pool.teacher_calls == 6 * K
    for p in served:  # each pair is still a pair: the tangent is the guided teacher velocity there
        assert_close_to_scale(p.u, teacher.velocity(p.x_t, p.t, p.cond, p.w))
        assert torch.equal(p.cond.embeds, pool.conds.index(p.prompt_ids).embeds)
    mixed = served[0].prompt_ids.tolist()
    assert len(set(mixed)) > 2  # drawn from more trajectories than a step's own prompts
    pool.next_pairs(2)
    assert pool.teacher_calls == 2 * 6 * K  # drained: refilled


def test_pool_reuse_serves_each_pair_that_many_times(tiny_teacher_dir):
    _, pool = _pool(tiny_teacher_dir, pool_prompts=4, reuse=2)
    served = [pool.next_pairs(2) for _ in range(4)]
    keys = [(float(p.t[i]), float(p.x_t[i].sum())) for p in served for i in range(len(p))]
    assert len(keys) == 2 * len(set(keys)) == 2 * 4 * (K - 1) and pool.teacher_calls == 4 * K


def test_pool_state_round_trips_to_identical_batches(tiny_teacher_dir):
    _, a = _pool(tiny_teacher_dir)
    a.next_pairs(2)
    state = a.state_dict()
    _, b = _pool(tiny_teacher_dir)
    b.load_state_dict(state)
    for _ in range(3):  # across a refill
        pa, pb = a.next_pairs(2), b.next_pairs(2)
        assert torch.equal(pa.x_t, pb.x_t) and torch.equal(pa.t, pb.t) and torch.equal(pa.prompt_ids, pb.prompt_ids)


def test_distiller_uses_the_pool_for_online_rollouts_only(tiny_teacher_dir):
    d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "pairs.pool_prompts=8",
                                                    "prompts_per_step=2", "pairs.route_points=4", "threads=1"]))
    assert isinstance(d.source, TrajectoryPool)
    stats = d.train_step()
    assert stats["pairs"] == 2 * 3 and stats["teacher_calls"] == 8 * 4 and stats["pool_mb"] > 0
    forward = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "pairs.pool_prompts=8",
                                                          "source=teacher_x0", "forward.pool_size=4", "threads=1"]))
    assert not isinstance(forward.source, TrajectoryPool)


def test_a_resumed_pool_run_equals_the_uninterrupted_one(tiny_teacher_dir):
    args = [f"teacher={tiny_teacher_dir}", "pairs.pool_prompts=5", "prompts_per_step=2", "pairs.route_points=4",
            "threads=1", "optim.warmup_steps=0"]
    straight = Distiller(load_config(DistillConfig, None, args))
    for _ in range(6):
        straight.train_step()
    first = Distiller(load_config(DistillConfig, None, args))
    for _ in range(3):
        first.train_step()
    state = first.state_dict()
    resumed = Distiller(load_config(DistillConfig, None, args))
    resumed.load_state_dict(state)
    for _ in range(3):
        resumed.train_step()
    for name, tensor in straight.student.state_dict().items():
        assert torch.equal(tensor, resumed.student.state_dict()[name]), name
