"""Building a run's pair source from its config: the trajectory rollout (TBCM, optionally pooled),
a trajectory cache, or the forward-noised baselines."""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.registry import get_family
from .prompts import PromptSampler


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's pair generator (noise, routes, CFG scales): distinct per rank."""
    return seed + 1_000_003 * (rank + 1)


def blank_reference(cfg, meta, image_shape: tuple[int, int, int]):
    """What the degenerate filter compares final samples with, in flow space: a pixel family's
    blank pixel value, or a latent teacher's VAE encoding of a black image."""
    blank_latent = get_family(meta.family).blank_latent
    if blank_latent is not None and cfg.pairs.blank_threshold > 0:
        return blank_latent(meta, image_shape)
    return meta.blank_value


def make_pair_source(cfg, teacher, conds, encoder, meta, image_shape, device, rank: int = 0, world_size: int = 1):
    """The pair source of ``cfg.source`` for this rank (``sample`` / ``next_pairs`` / state)."""
    if cfg.source == "cache":
        from .cache import CachePairSource

        return CachePairSource(cfg.cache.dir, conds, seed=cfg.seed, rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(rank_seed(cfg.seed, rank))
    if cfg.source in ("forward", "teacher_x0"):
        return _forward_source(cfg, teacher, conds, encoder, image_shape, device, generator, rank)
    from .rollout_teacher import rollout_teacher
    from .trajectory import TrajectoryPairSource

    sampler = PromptSampler(len(conds), seed=cfg.seed, rank=rank, world_size=world_size)
    rollout = rollout_teacher(teacher, cfg.pairs.rollout_dtype, cfg.pairs.rollout_compile)
    source = TrajectoryPairSource(rollout, conds, list(cfg.cfg_scales), image_shape, cfg.pairs,
                                  blank_reference(cfg, meta, image_shape), generator, sampler)
    if cfg.pairs.pool_prompts > 0:  # online rollouts only: cache and forward sources have no pool
        from .pool import TrajectoryPool

        pool_generator = torch.Generator().manual_seed(rank_seed(cfg.seed, rank) + 7)
        return TrajectoryPool(source, cfg.pairs.pool_prompts, cfg.pairs.pool_reuse, pool_generator)
    return source


def keep_trajectory_ends(source, setting: str, source_name: str) -> None:
    """Make ``source`` attach each pair's trajectory end (``Pairs.x0``), or refuse in one line
    naming ``setting`` (the config key that needs it)."""
    inner = getattr(source, "inner", source)
    if not hasattr(inner, "keep_final"):
        raise UserError(f"{setting} needs each pair's trajectory end (the teacher's own final sample), "
                        f"source={source_name} has none: use source=trajectory (or set {setting}=0)")
    inner.keep_final = True


def _forward_source(cfg, teacher, conds, encoder, image_shape, device, generator, rank: int):
    """The baselines: real images (``forward``) or a pool of teacher samples (``teacher_x0``),
    forward-noised, with one guided teacher call per pair."""
    from ..data import load_training_data
    from .forward import ForwardNoisePairSource, teacher_pool

    pairs_per_prompt = cfg.pairs.route_points - 1  # same pairs per step as the trajectory source
    if cfg.source == "forward":
        data = load_training_data(cfg.forward.data, image_shape[-1], cfg.forward.prompt_template)
        if tuple(data.images.shape[1:]) != tuple(image_shape):
            raise UserError(f"forward.data images are {tuple(data.images.shape[1:])}, the teacher makes "
                            f"{tuple(image_shape)}: use data of the teacher's shape")
        unique = sorted(set(data.prompts))
        which = torch.tensor([unique.index(p) for p in data.prompts])
        image_conds = encoder.encode(unique).to(device).index(which.to(device))  # one per image
        return ForwardNoisePairSource(teacher, teacher.sigma_d * data.images, image_conds, list(cfg.cfg_scales),
                                      pairs_per_prompt, cfg.forward, generator)
    x0, pool_conds, calls = teacher_pool(teacher, conds, list(cfg.cfg_scales), image_shape, cfg.forward,
                                         seed=cfg.seed + 17 * (rank + 1))
    source = ForwardNoisePairSource(teacher, x0, pool_conds, list(cfg.cfg_scales), pairs_per_prompt, cfg.forward,
                                    generator)
    source.teacher_calls = calls  # the pool is part of this source's teacher budget
    return source
