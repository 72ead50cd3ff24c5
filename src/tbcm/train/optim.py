"""The student's optimiser and learning-rate schedule."""

from __future__ import annotations

import math

import torch


def make_optimizer(params, o) -> torch.optim.Optimizer:
    """AdamW (torch) or CAME (pytorch-optimizer, hustvl/TBCM's choice) from ``optim.*``. CAME
    factors its second moments over a tensor's last two dimensions: smaller than Adam's state for
    linear layers, larger for 1x1 convolutions (1.44x AdamW on Sana, docs/results.md)."""
    if o.name == "came":
        from pytorch_optimizer import CAME

        return CAME(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                    eps1=o.came_eps[0], eps2=o.came_eps[1])
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def lr_at(step: int, o, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) of ``total_steps``: linear warmup over
    ``optim.warmup_steps``, then constant (TBCM's schedule) or a cosine from ``lr`` at the end of
    the warmup to ``decay_to * lr`` at the last step (``total_steps - 1``)."""
    if o.warmup_steps and step + 1 < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.decay == "constant":
        return o.lr
    start, end = max(o.warmup_steps - 1, 0), total_steps - 1
    progress = min(1.0, max(0.0, (step - start) / (end - start))) if end > start else 1.0
    return o.lr * (o.decay_to + (1.0 - o.decay_to) * 0.5 * (1.0 + math.cos(math.pi * progress)))
