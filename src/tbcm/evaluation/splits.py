"""Tune and confirm splits, fixed in code: which images and which training seeds a choice may look at,
and which ones a reported figure comes from.

Every choice (recipe, sampler, guidance, the teacher's best setting) is made on the **tune** split;
every reported figure comes from the **confirm** split: the mean and standard error over the confirm
training seeds, with the per-seed values, on confirm evaluation draws. A target counts as met only
when the confirm mean plus one standard error is within it (:func:`target_met`); otherwise the docs
say "not shown".

Evaluation draws.  A draw is a block of :data:`DRAW_STRIDE` consecutive image seeds: image ``k``
of a draw (``tbcm eval``: image ``j`` of prompt ``i``, ``k = i n + j``) is seeded
``draw_seed(split, draw) + k``. The blocks start far above the seeds 0..20,000 the older
benchmarks drew from (``benchmarks/eval_noise.py``: ``draw * 10 n``), tune below confirm:

* tune draw ``d``:    seeds ``10,000,000 + d * 1,000,000`` onwards, ``d`` in ``0 .. 39``;
* confirm draw ``d``: seeds ``50,000,000 + d * 1,000,000`` onwards, ``d`` in ``0 .. 39``.

A draw holds up to a million images: several hundred per digit (10 prompts) or per scenes prompt
(96 prompts) fit many times over.

Training seeds.  Tune ``100, 101, 102``; confirm ``200 .. 204`` (the older runs trained seeds 0-2).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import UserError

SPLITS = ("tune", "confirm")
DRAW_STRIDE = 1_000_000  # image seeds per draw
DRAWS_PER_SPLIT = 40
DRAW_BASE = {"tune": 10_000_000, "confirm": 50_000_000}
TRAIN_SEEDS = {"tune": (100, 101, 102), "confirm": (200, 201, 202, 203, 204)}
OLD_SEEDS = range(0, 20_001)  # image seeds the benchmarks before the splits drew from


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose tune (where choices are made) or confirm (what is reported)")
    return split


def draw_seed(split: str, draw: int) -> int:
    """The first image seed of evaluation draw ``draw`` of ``split`` (``"tune"`` or ``"confirm"``)."""
    _check_split(split)
    if not (isinstance(draw, int) and 0 <= draw < DRAWS_PER_SPLIT):
        raise UserError(f"--draw {draw}: a draw is a whole number from 0 to {DRAWS_PER_SPLIT - 1}")
    return DRAW_BASE[split] + draw * DRAW_STRIDE


def draw_seeds(split: str, draw: int) -> range:
    """Every image seed evaluation draw ``draw`` of ``split`` may use."""
    first = draw_seed(split, draw)
    return range(first, first + DRAW_STRIDE)


def split_of_seed(seed: int) -> tuple[str, int] | None:
    """``(split, draw)`` whose draw holds image seed ``seed``; ``None`` outside every draw."""
    for split in SPLITS:
        offset = seed - DRAW_BASE[split]
        if 0 <= offset < DRAWS_PER_SPLIT * DRAW_STRIDE:
            return split, offset // DRAW_STRIDE
    return None


def check_draw_size(images: int) -> None:
    """Raise :class:`UserError` if a draw of ``images`` images would run into the next draw's seeds."""
    if images > DRAW_STRIDE:
        raise UserError(f"{images} images do not fit in one evaluation draw ({DRAW_STRIDE} seeds): lower --n")


def train_seeds(split: str) -> tuple[int, ...]:
    """The training seeds of ``split``: tune ``(100, 101, 102)``, confirm ``(200, .., 204)``."""
    return TRAIN_SEEDS[_check_split(split)]


@dataclass(frozen=True)
class Summary:
    """Mean and standard error (sample standard deviation / sqrt(n)) of per-seed ``values``;
    ``se`` is NaN for a single value (no spread to estimate)."""

    mean: float
    se: float
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"mean", "se" (None for one value), "n", "values"}``."""
        return {"mean": self.mean, "se": None if math.isnan(self.se) else self.se, "n": self.n,
                "values": list(self.values)}


def summarize(values) -> Summary:
    """:class:`Summary` of per-seed values (at least one, all finite)."""
    values = tuple(float(v) for v in values)
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"need at least one finite value, got {values}")
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return Summary(statistics.fmean(values), se, values)


def target_met(values, target: float, lower_is_better: bool = True) -> bool:
    """Whether per-seed confirm ``values`` meet ``target``: the mean plus one standard error is at
    most ``target`` (``lower_is_better``: FID, a ratio), or the mean minus one standard error is at
    least it (adherence). A single seed has no standard error: never met."""
    s = summarize(values)
    if s.n < 2:
        return False
    return s.mean + s.se <= target if lower_is_better else s.mean - s.se >= target


def verdict(values, target: float, lower_is_better: bool = True) -> str:
    """``"met"`` or ``"not shown"`` (what the docs write), by :func:`target_met`."""
    return "met" if target_met(values, target, lower_is_better) else "not shown"
