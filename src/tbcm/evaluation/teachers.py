"""The teacher as ``tbcm eval`` scores it: the teacher the student copies, and the teacher at its best.

Every teacher here is the same sampler with different settings (:class:`TeacherSetting`): a
first-order TrigFlow rollout (:func:`tbcm.sampling.rollout`) from ``sigma_d * noise`` through the
``steps`` angles of hustvl/TBCM's reference route for ``shift`` (:func:`tbcm.evaluation.draws.teacher_route`,
no jitter), then to 0, guided with scale ``cfg`` inside ``interval`` and conditional outside it.

* **as copied**: the route, guidance interval and guidance of the training rollouts
  (:meth:`tbcm.sampler.StudentSampler.teacher_route`, ``guidance_interval``; at the student's guidance
  input and at each guidance scale it was trained on);
* **at its best**: the setting of a :class:`TeacherGrid` (step count, route shift, guidance scale,
  guidance interval) with the lowest FID on a *tune* draw (:mod:`tbcm.evaluation.splits`),
  reported on the evaluation's own draw (confirm, for a reported figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..errors import UserError
from ..models.adapter import valid_interval
from .draws import teacher_route
from .splits import DRAWS_PER_SPLIT

DEFAULT_STEPS = (16, 32, 64, 128)
DEFAULT_SHIFTS = (1.0, 2.5)
DEFAULT_INTERVALS = ("run", "none")


@dataclass(frozen=True)
class TeacherSetting:
    """One teacher sampler: ``steps`` route points (= guided teacher calls) of the reference route
    with ``shift``, guidance scale ``cfg``, guided at angles in ``interval`` ``(lo, hi]`` (radians;
    ``None``: at every angle)."""

    steps: int
    shift: float
    cfg: float
    interval: tuple[float, float] | None = None

    def route(self) -> Tensor:
        """``[steps]`` float64 angles (radians) from pi/2 down; the rollout then steps to 0."""
        return teacher_route(self.steps, self.shift)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "shift": self.shift, "cfg": self.cfg,
                "guidance_interval": list(self.interval) if self.interval else []}

    def canonical(self) -> "TeacherSetting":
        """The same sampler with guidance 1 written unguided (``interval=None``): the conditional
        teacher, whatever the interval, so two spellings of it compare equal."""
        return TeacherSetting(self.steps, self.shift, self.cfg, None) if self.cfg == 1.0 else self

    def label(self) -> str:
        where = "everywhere" if self.interval is None else f"in ({self.interval[0]:g}, {self.interval[1]:g}]"
        return f"{self.steps} steps, shift {self.shift:g}, w {self.cfg:g} {where}"


def parse_interval(text: str, run_interval: list[float]) -> tuple[float, float] | None:
    """A guidance interval of :attr:`TeacherGrid.intervals`: ``"run"`` (the student's, ``run_interval``),
    ``"none"`` (every angle) or ``"LO:HI"`` radians. Raises :class:`UserError`."""
    text = str(text).strip().lower()
    if text == "run":
        return tuple(run_interval) if run_interval else None
    if text == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        lo = hi = math.nan
    if not valid_interval([lo, hi]):
        raise UserError(f"--best-interval {text!r}: give run, none or LO:HI angles with 0 <= LO < HI <= pi/2 "
                        "(e.g. run,none,0:0.5)")
    return (lo, hi)


@dataclass(frozen=True)
class TeacherGrid:
    """What "the teacher at its best" searches: every combination of ``steps`` (route points),
    ``shifts`` (route shift), ``cfgs`` (guidance scale; ``None``: 1 and the scales the student was
    trained on) and ``intervals`` (``"run"``, ``"none"``, ``"LO:HI"``: see :func:`parse_interval`),
    chosen on tune draw ``draw``."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    shifts: tuple[float, ...] = DEFAULT_SHIFTS
    cfgs: tuple[float, ...] | None = None
    intervals: tuple[str, ...] = DEFAULT_INTERVALS
    draw: int = 0

    def check(self) -> None:
        """Raise :class:`UserError` on a value no teacher can run (before any model loads)."""
        if not self.steps or any(int(s) < 1 for s in self.steps):
            raise UserError(f"--best-steps must be step counts >= 1 (got {list(self.steps)}): e.g. 16,32,64,128")
        if not self.shifts or any(not (math.isfinite(s) and s > 0) for s in self.shifts):
            raise UserError(f"--best-shift must be positive route shifts (got {list(self.shifts)}): e.g. 1,2.5")
        if self.cfgs is not None and (not self.cfgs or any(not (w >= 0) for w in self.cfgs)):
            raise UserError(f"--best-cfg must be guidance scales >= 0 (got {list(self.cfgs)}): e.g. 1,2,3")
        if not self.intervals:
            raise UserError("--best-interval needs at least one of run, none, LO:HI")
        for text in self.intervals:
            parse_interval(text, [])
        if not (isinstance(self.draw, int) and 0 <= self.draw < DRAWS_PER_SPLIT):
            raise UserError(f"--best-draw {self.draw}: a tune draw from 0 to {DRAWS_PER_SPLIT - 1}")

    def settings(self, sampler) -> list[TeacherSetting]:
        """The distinct settings, in grid order, then the teacher as copied at the student's guidance
        (:func:`copied_setting`) if the grid lacks it: the teacher at its best is never worse, on the
        tune draw, than the one the student copies. Guidance 1 is the conditional teacher whatever
        the interval, so it runs once (interval ``None``)."""
        cfgs = self.cfgs if self.cfgs is not None else sorted({1.0, *sampler.cfg_scales})
        intervals = list(dict.fromkeys(parse_interval(i, sampler.guidance_interval) for i in self.intervals))
        out: list[TeacherSetting] = []
        for steps in self.steps:
            for shift in self.shifts:
                for w in cfgs:
                    for interval in intervals:
                        s = TeacherSetting(int(steps), float(shift), float(w), interval).canonical()
                        if s not in out:
                            out.append(s)
        copied = copied_setting(sampler, sampler.cfg_scale).canonical()
        return out if copied in out else [*out, copied]

    def to_dict(self, sampler) -> dict:
        cfgs = self.cfgs if self.cfgs is not None else sorted({1.0, *sampler.cfg_scales})
        return {"steps": [int(s) for s in self.steps], "shifts": [float(s) for s in self.shifts],
                "cfgs": [float(w) for w in cfgs], "intervals": list(self.intervals)}


def copied_setting(sampler, cfg: float) -> TeacherSetting:
    """The teacher the student copies, at guidance ``cfg``: the route of its training rollouts
    (``teacher_route_points`` points of the reference route for ``teacher_route_shift``) guided in
    its ``guidance_interval``."""
    interval = tuple(sampler.guidance_interval) if sampler.guidance_interval else None
    return TeacherSetting(sampler.teacher_route_points, sampler.teacher_route_shift, float(cfg), interval)
