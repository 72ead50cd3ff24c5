"""The teacher as the trajectory rollout calls it: no gradients, optionally in bf16 and compiled.

The rollout only reads the teacher, so its forward can run under bf16 autocast
(``pairs.rollout_dtype=bf16``) and through ``torch.compile`` (``pairs.rollout_compile=true``)
without touching the student's step. Both are off by default, and then the source is given the
plain :class:`~tbcm.models.teacher.Teacher` itself, so results are bit-identical to a run
without these options.

The conditional and unconditional passes of CFG stay one batched network call of ``[2B]``
(:func:`tbcm.models.adapter.guided_F`); only that network call is cast or compiled. Its output
is cast back to float32 before the guidance combination ``F_null + w (F_cond - F_null)`` and the
ODE step, so the trajectory states stay float32.

Either option falls back cleanly: when bf16 autocast is unavailable on the device, or when a
compiled or bf16 call raises, one warning is issued and the call (and every later one) runs in
float32 / eagerly. A genuine error then raises from the plain call.

``no_grad`` rather than ``inference_mode``: the pairs become inputs of the student's gradient
step, and tensors made under ``inference_mode`` cannot be saved for backward.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..errors import brief
from ..models.adapter import interval_guided_F
from ..models.condition import TextCondition

ROLLOUT_DTYPES = ("fp32", "bf16")  # the spelling of `precision` and `teacher_dtype`


class RolloutTeacher:
    """``velocity(x_t, t, cond, w) -> dx_t/dt``, as :meth:`Teacher.velocity`, for the rollout.

    ``x_t`` ``[B, C, H, W]`` unnormalised TrigFlow states (float32), ``t`` ``[B]`` angles in
    radians, ``cond`` a :class:`TextCondition` of batch ``B``, ``w`` ``[B]`` CFG scales; returns
    float32 ``[B, C, H, W]``. ``dtype`` is one of :data:`ROLLOUT_DTYPES`; ``compile`` wraps the
    teacher's network call (``Teacher.F``) in ``torch.compile``.
    """

    def __init__(self, teacher, dtype: str = "fp32", compile: bool = False):
        if dtype not in ROLLOUT_DTYPES:
            raise ValueError(f"rollout dtype must be one of {ROLLOUT_DTYPES}, got {dtype!r}")
        self.teacher = teacher
        self.sigma_d = teacher.sigma_d
        self.bf16 = dtype == "bf16"
        self.compiled = None
        if compile:
            try:
                self.compiled = torch.compile(teacher.F)
            except Exception as exc:  # noqa: BLE001 - no compiler, unsupported Python, ...
                self._give_up_compile(exc)

    def _give_up_compile(self, exc: BaseException) -> None:
        self.compiled = None
        warnings.warn(f"pairs.rollout_compile: torch.compile failed ({brief(exc)}); the rollout runs "
                      "the teacher eagerly", RuntimeWarning, stacklevel=3)

    def _give_up_bf16(self, why: str) -> None:
        self.bf16 = False
        warnings.warn(f"pairs.rollout_dtype=bf16: {why}; the rollout runs the teacher in float32",
                      RuntimeWarning, stacklevel=3)

    def _call(self, fn, x: Tensor, t: Tensor, cond: TextCondition) -> Tensor:
        if self.bf16 and not torch.amp.is_autocast_available(x.device.type):
            self._give_up_bf16(f"autocast is not available on {x.device.type}")
        if not self.bf16:
            return fn(x, t, cond)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return fn(x, t, cond).float()

    def _network(self, x: Tensor, t: Tensor, cond: TextCondition) -> Tensor:
        """One network call on the ``[2B]`` batch (cond + null), float32 out. A failing compiled
        call gives up compiling; a failing eager bf16 call gives up bf16; the float32 eager call
        is the plain teacher's and raises what it raises."""
        if self.compiled is not None:
            try:
                return self._call(self.compiled, x, t, cond)
            except Exception as exc:  # noqa: BLE001 - dynamo/inductor failures have many classes
                self._give_up_compile(exc)
        try:
            return self._call(self.teacher.F, x, t, cond)
        except Exception as exc:  # noqa: BLE001 - e.g. an op without a bf16 kernel on this device
            if not self.bf16:
                raise
            self._give_up_bf16(f"the bf16 forward failed ({brief(exc)})")
        return self._call(self.teacher.F, x, t, cond)

    @torch.no_grad()
    def velocity(self, x_t: Tensor, t: Tensor, cond: TextCondition, w: Tensor) -> Tensor:
        teacher, sd = self.teacher, self.sigma_d
        if teacher.null_cond.embeds.device != x_t.device:
            teacher.null_cond = teacher.null_cond.to(x_t.device)
        return sd * interval_guided_F(self._network, x_t / sd, t, cond, teacher.null_cond, w, teacher.guidance_interval)


def rollout_teacher(teacher, dtype: str = "fp32", compile: bool = False):
    """The teacher the rollout should call: ``teacher`` itself when both options are off (so a run
    is bit-identical to one without them), else a :class:`RolloutTeacher` around it."""
    if dtype == "fp32" and not compile:
        return teacher
    return RolloutTeacher(teacher, dtype, compile)
