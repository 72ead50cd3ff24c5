"""Tune and confirm splits: which training seeds and evaluation draws a choice may look at, and
which ones a reported figure comes from.

Every choice (recipe, sampler, guidance, the teacher's best setting) is made on ``tune``; every
reported figure comes from ``confirm``: the mean and standard error over the confirm training
seeds, with the per-seed values, on confirm draws.

TO BE REPLACED by ``tbcm.evaluation.splits`` when it lands: this module is the harness's only
definition of the seeds, and its functions have that module's names and numbers, so the switch is
``from tbcm.evaluation.splits import draw_seed, summarize, train_seeds`` here and nothing else.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

SPLITS = ("tune", "confirm")
DRAW_STRIDE = 1_000_000  # image seeds per draw: draw d of a split holds seeds base + d * stride onwards
DRAWS_PER_SPLIT = 40
_DRAW_BASE = {"tune": 10_000_000, "confirm": 50_000_000}  # far above the seeds 0..20,000 the notebook drew
_TRAIN_SEEDS = {"tune": (100, 101, 102), "confirm": (200, 201, 202, 203, 204)}  # the notebook trained 0-2


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose tune (where choices are made) or confirm (what is reported)")
    return split


def train_seeds(split: str) -> tuple[int, ...]:
    """The training seeds of ``split``."""
    return _TRAIN_SEEDS[check_split(split)]


def draw_seed(split: str, draw: int) -> int:
    """The first image seed of evaluation draw ``draw`` of ``split`` (``tbcm eval --seed``)."""
    check_split(split)
    if not 0 <= draw < DRAWS_PER_SPLIT:
        raise ValueError(f"draw {draw}: a draw is a whole number from 0 to {DRAWS_PER_SPLIT - 1}")
    return _DRAW_BASE[split] + draw * DRAW_STRIDE


@dataclass(frozen=True)
class Summary:
    """Mean and standard error (sample sd / sqrt(n)) of per-seed values; ``se`` is NaN for one value."""

    mean: float
    se: float
    values: tuple[float, ...]


def summarize(values) -> Summary:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("need at least one value")
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return Summary(statistics.fmean(values), se, values)
