"""The few-step sampler of a student, as one object saved with it (a diffusers scheduler config
travelling with the weights).

Everything that draws images from a student -- ``tbcm sample``, ``tbcm eval``, export, the preview
grids, the benchmarks -- asks a :class:`StudentSampler` for its angles and guidance, and nothing else
reads the sampler's settings from a student folder: :meth:`StudentSampler.from_extra` is the one
place (old student folders, saved before the object existed, included).

    sampler = StudentSampler.from_extra(bundle.meta.extra).overridden(fresh_noise=1.0)
    x0 = sampler.sample(student, cond, noise, steps=2, generator=gens)

Angles are TrigFlow radians (pi/2 = pure noise); ``cfg_scale`` is the guidance input ``w`` the
student receives (it was distilled on ``cfg_scales``), not a classifier-free guidance of its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor

from .errors import UserError
from .sampling import check_route, student_angles, student_sample
from .trigflow import official_reference_route

#: the settings a student folder saved before the object existed falls back to
LEGACY_DEFAULTS = {"default_cfg_scale": 4.5, "shift": 2.5, "fresh_noise": 1.0}


@dataclass
class StudentSampler:
    """A student's few-step sampler and what it was distilled from.

    Sampling: ``cfg_scale`` (the guidance input ``w``), ``shift`` (the route of step counts without
    an explicit one: :func:`tbcm.trigflow.sampling_angles`; its 2-step middle angle is
    ``arctan(shift)``), ``fresh_noise`` (the re-noising share of :func:`tbcm.sampling.student_sample`:
    1 = sCM's fresh noise) and ``routes`` (``{steps: middle angles}``, explicit routes per count).

    Provenance (what an evaluation compares with): ``cfg_scales`` the guidance inputs it was trained
    on, ``guidance_interval`` the angles ``[lo, hi]`` where its teacher was guided (``[]``: all),
    ``teacher_route_points`` / ``teacher_route_shift`` the route of the teacher rollouts it learnt
    from (:meth:`teacher_route`).
    """

    cfg_scale: float = 4.5
    shift: float = 2.5
    fresh_noise: float = 1.0
    routes: dict[int, list[float]] = field(default_factory=dict)
    cfg_scales: list[float] = field(default_factory=lambda: [4.5])
    guidance_interval: list[float] = field(default_factory=list)
    teacher_route_points: int = 16
    teacher_route_shift: float = 2.5

    def __post_init__(self) -> None:
        self.cfg_scale, self.shift, self.fresh_noise = float(self.cfg_scale), float(self.shift), float(self.fresh_noise)
        if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
            raise UserError(f"guidance input {self.cfg_scale:g}: give a scale >= 0, e.g. --cfg 3")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise UserError(f"--shift must be a positive number (got {self.shift:g}): the student's route shift, "
                            "e.g. 1 (2-step middle angle pi/4) or 2.5 (1.19 rad)")
        if not 0.0 <= self.fresh_noise <= 1.0:
            raise UserError(f"--fresh-noise must be in [0, 1] (got {self.fresh_noise:g}): 1 = fresh noise, "
                            "0 = implied noise")
        self.routes = {int(k): check_route(k, v) for k, v in self.routes.items()}
        self.cfg_scales = [float(w) for w in self.cfg_scales]
        self.guidance_interval = [float(a) for a in self.guidance_interval]
        self.teacher_route_points = int(self.teacher_route_points)
        self.teacher_route_shift = float(self.teacher_route_shift)

    # -- what it does -----------------------------------------------------------------------
    def angles(self, steps: int) -> list[float]:
        """``steps + 1`` angles from pi/2 down to 0 (radians) of the ``steps``-step sampler."""
        if int(steps) < 1:
            raise UserError(f"steps must be at least 1 (got {steps})")
        return student_angles(int(steps), self.shift, self.routes)

    @torch.no_grad()
    def sample(self, student, cond, noise: Tensor, steps: int,
               generator: torch.Generator | list[torch.Generator] | None = None, w: Tensor | float | None = None) -> Tensor:
        """``x0`` ``[B, C, H, W]`` (TrigFlow space) from standard-normal ``noise`` ``[B, C, H, W]``
        in ``steps`` student calls; ``w`` the guidance input (default ``cfg_scale``), a number or ``[B]``."""
        w = self.cfg_scale if w is None else w
        if not torch.is_tensor(w):
            w = torch.full((noise.shape[0],), float(w), device=noise.device)
        return student_sample(student, cond, w, noise, self.angles(steps), generator=generator,
                              fresh_noise=self.fresh_noise)

    def teacher_route(self) -> Tensor:
        """``[K]`` float64 angles of the route the student's pairs were rolled out on (hustvl/TBCM's
        reference route, no jitter): the teacher the student copies runs this, then steps to 0."""
        return official_reference_route(self.teacher_route_points, self.teacher_route_shift)

    def overridden(self, cfg_scale: float | None = None, shift: float | None = None, fresh_noise: float | None = None,
                   routes: dict | None = None) -> "StudentSampler":
        """A copy with the given settings replaced (``None``: keep). A ``shift`` alone asks for the
        shifted route at every step count, so it drops the saved explicit routes; ``routes={}`` too."""
        changes: dict = {}
        if cfg_scale is not None:
            changes["cfg_scale"] = cfg_scale
        if fresh_noise is not None:
            changes["fresh_noise"] = fresh_noise
        if shift is not None:
            changes["shift"] = shift
            changes["routes"] = {}
        if routes is not None:
            changes["routes"] = routes
        return replace(self, **changes)

    # -- saved with the student ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain YAML/JSON data (route keys as strings)."""
        out = asdict(self)
        out["routes"] = {str(k): list(v) for k, v in self.routes.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "StudentSampler":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"the saved sampler has unknown settings {unknown}: it was written by a newer tbcm; "
                            "upgrade tbcm")
        return cls(**data)

    @classmethod
    def from_extra(cls, extra: dict) -> "StudentSampler":
        """The sampler saved in a student's ``meta.extra`` (``"sampler"``), or, for a student saved
        before it existed, the same settings from the older keys (``default_cfg_scale``, ``shift``,
        ``fresh_noise``, ``routes``, ``cfg_scales``, ``guidance_interval``) with their old fallbacks."""
        if "sampler" in extra:
            return cls.from_dict(dict(extra["sampler"]))
        cfg = float(extra.get("default_cfg_scale", LEGACY_DEFAULTS["default_cfg_scale"]))
        return cls(cfg_scale=cfg, shift=float(extra.get("shift", LEGACY_DEFAULTS["shift"])),
                   fresh_noise=float(extra.get("fresh_noise", LEGACY_DEFAULTS["fresh_noise"])),
                   routes=dict(extra.get("routes", {})), cfg_scales=list(extra.get("cfg_scales", [cfg])),
                   guidance_interval=list(extra.get("guidance_interval", [])))
