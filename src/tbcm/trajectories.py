"""``tbcm trajectories``: roll the teacher out once and keep the pairs on disk.

Training then reads the shards (``source=cache cache.dir=DIR``) instead of calling the teacher.
Under torchrun the ranks split the shards; rerunning skips the shards already written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import distributed as dist_utils
from .config import DistillConfig
from .models.loading import load_teacher_and_prompts
from .pairs.build import blank_reference
from .pairs.cache import write_trajectory_cache
from .pairs.rollout_teacher import rollout_teacher
from .pairs.trajectory import TrajectoryPairSource


def write_cache_from_config(cfg: DistillConfig, out: str | Path, progress: bool = True) -> Path:
    info = dist_utils.init_distributed(cfg.device)
    bundle, teacher, prompts, conds = load_teacher_and_prompts(cfg, info)
    meta = bundle.meta
    teacher.F.to(info.device)  # the network only: prompts are encoded already
    shape = (meta.channels, meta.image_size, meta.image_size)
    teacher = rollout_teacher(teacher, cfg.pairs.rollout_dtype, cfg.pairs.rollout_compile)
    source = TrajectoryPairSource(teacher, conds.to(info.device), list(cfg.cfg_scales), shape, cfg.pairs,
                                  blank_reference(cfg, meta, shape), torch.Generator())
    path = write_trajectory_cache(source, prompts, out, cfg.cache.shards, cfg.cache.prompts_per_shard, cfg.seed,
                                  rank=info.rank, world_size=info.world_size, progress=progress and info.is_main,
                                  extra_meta={"teacher": str(cfg.teacher), "shift": cfg.pairs.shift,
                                              "jitter": cfg.pairs.jitter, "blank_threshold": cfg.pairs.blank_threshold,
                                              "guidance_interval": [float(a) for a in cfg.guidance_interval]})
    dist_utils.barrier(info)
    return Path(path)
