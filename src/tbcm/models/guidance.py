"""The guidance scales a distillation trains on when the run does not name them: the teacher's own.

TBCM distils Sana at ``w`` in {4, 4.5, 5}: the scale Sana is sampled at (``SanaPipeline``'s default
``guidance_scale``, 4.5) and 0.5 either side. Copied to a teacher sampled at another scale, those
numbers make the student copy a teacher nobody samples: the letters teacher of docs/results.md
reads 14.4x its best FID at guidance 4.5, and the digits, scenes and letters teachers are all at
their best at guidance 1-2. So the library keeps the paper's rule, not its numbers: the scales are
``g - 0.5, g, g + 0.5`` (none below 0) and the student samples at ``g``, where ``g`` is, first found:

1. the run's own ``cfg_scales`` / ``sampler.cfg_scale`` (a recipe that names them keeps them);
2. the teacher's ``model.yaml`` ``guidance`` (the scale its owner samples it at);
3. its family's pipeline default (:attr:`tbcm.models.family.Family.guidance`: Sana 4.5, SD3 7.0);
4. the paper's 4.5.

The resolved values are written into the run's config before it is saved (``config.yaml``), so a
run is reproduced by its config alone.
"""

from __future__ import annotations

import math

from ..errors import UserError
from .registry import get_family

PAPER_GUIDANCE = 4.5  # Sana's sampling guidance, the centre of TBCM's {4, 4.5, 5}
SPREAD = 0.5  # TBCM's half-width around it


def teacher_guidance(meta) -> tuple[float, str]:
    """``(g, where it came from)`` for a teacher's :class:`~tbcm.models.bundle.ModelMeta`."""
    if meta.guidance is not None:
        g = meta.guidance
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise UserError(f"the teacher's model.yaml has guidance: {g!r}: write the guidance scale you sample "
                            "it at, a number >= 0 (e.g. guidance: 4.5), or delete the line")
        return float(g), "the teacher's model.yaml `guidance`"
    family = get_family(meta.family)
    if family.guidance is not None:
        return float(family.guidance), f"the {family.name} pipeline's default guidance_scale"
    return PAPER_GUIDANCE, "the paper's (the teacher names none: set `guidance` in its model.yaml)"


def scales_around(g: float) -> list[float]:
    """TBCM's three training scales around ``g``: ``[g - 0.5, g, g + 0.5]``, none below 0."""
    return sorted({max(g - SPREAD, 0.0), g, g + SPREAD})


def middle_scale(scales: list[float]) -> float:
    """The sampling scale of a list of training scales: its median (the lower one of an even count)."""
    ordered = sorted(float(w) for w in scales)
    return ordered[(len(ordered) - 1) // 2]


def resolve_guidance(cfg, meta) -> str | None:
    """Fill a distillation config's unset ``cfg_scales`` (``[]``) and ``sampler.cfg_scale``
    (``None``) in place from the teacher; returns a one-line account, or ``None`` when both were set."""
    note = None
    if not cfg.cfg_scales:
        g, source = teacher_guidance(meta)
        cfg.cfg_scales = scales_around(g)  # whose middle is g: the sampler's scale below
        note = (f"guidance: training on w in {[round(w, 4) for w in cfg.cfg_scales]} around {g:g}, from {source}; "
                "set cfg_scales to choose")
    if cfg.sampler.cfg_scale is None:
        cfg.sampler.cfg_scale = middle_scale(cfg.cfg_scales)
    return note
