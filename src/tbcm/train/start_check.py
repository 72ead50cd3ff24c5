"""The checked start: sCM assumes the untrained student equals the teacher; measure it on one
batch of the run's own pairs before anything is written, and refuse a mis-timed student."""

from __future__ import annotations

import copy

import torch
from tqdm import tqdm

from ..errors import UserError


@torch.no_grad()
def start_error(tr) -> float:
    """Relative error ``||F_student - F_teacher|| / ||F_teacher||`` on one batch of the run's own
    pairs (states, angles, prompts, guidance inputs), before any step.

    The student's guidance embedder starts at zero, so what it must equal is the teacher's
    *conditional* F (the guided F differs by design whenever ``w != 1``); what this catches is a
    student whose time input does not match the teacher's (a refitted dense-time embedding, a wrong
    ``teacher_time_multiplier``). The source's position and RNG are restored afterwards: training
    sees the same pairs. Collective under DDP/FSDP2 (the largest error over ranks)."""
    # a pool's own source: one step's prompts, not a whole pool refill thrown away
    source = getattr(tr.source, "inner", tr.source)
    state = copy.deepcopy(source.state_dict())
    pairs = source.next_pairs(tr.cfg.prompts_per_step).to(tr.device)
    source.load_state_dict(state)
    x = pairs.x_t / tr.sigma_d
    f_student = tr.student(x, pairs.t, pairs.cond, pairs.w).float()
    f_teacher = tr.teacher.F(x, pairs.t, pairs.cond).float()
    err = (f_student - f_teacher).norm() / f_teacher.norm().clamp(min=1e-12)
    if tr.dist.enabled:
        import torch.distributed as dist

        dist.all_reduce(err, op=dist.ReduceOp.MAX)
    return float(err)


def check_start(tr) -> float:
    """:func:`start_error`, refused above ``start_check_max_error`` (0 = not checked: NaN)."""
    limit = tr.cfg.start_check_max_error
    if limit <= 0:
        return float("nan")
    err = start_error(tr)
    if tr.dist.is_main:
        tqdm.write(f"start check: the student is {err:.2e} (relative) from the teacher's conditional F "
                   f"(limit {limit:g})")
    if not err <= limit:
        raise UserError(f"the untrained student is {err:.1%} away from the teacher (limit {limit:.1%}), but sCM "
                        "assumes it starts equal: its time input does not match the teacher's -- set "
                        "teacher_time_multiplier (1 for a dense-time teacher, 0 = from its config) or use a "
                        "dense-time teacher; start_check_max_error=0 skips the check")
    return err
