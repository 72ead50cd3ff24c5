"""A run's checkpoint state: everything an exact resume needs (student, EMA, optimiser, step,
every rank's data position and RNG, and each loss term's own state under its name)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from .. import distributed as dist_utils
from ..checkpoint import latest_checkpoint, save_checkpoint
from ..errors import TrainingStopped, UserError

# Full (unsharded) tensors whatever the parallelism, so a checkpoint loads anywhere; only the
# weights that train (a LoRA student's base is the teacher's, loaded from the teacher folder).
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def _without_prompt_order(state: dict) -> dict:
    """A source state without its prompt sampler's state (at any nesting: pools wrap sources)."""
    return {k: (_without_prompt_order(v) if isinstance(v, dict) and k != "prompts" else v)
            for k, v in state.items() if k != "prompts"}


def _with_prompt_order(state: dict, reference: dict) -> dict:
    """``state`` with the prompt sampler state of ``reference`` (rank 0's) put back where it was."""
    out = dict(state)
    for k, v in reference.items():
        if k == "prompts":
            out[k] = v
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _with_prompt_order(out[k], v)
    return out


def trainer_state(tr) -> dict:
    """The checkpoint state of a :class:`~tbcm.train.trainer.Distiller`. Collective under DDP/FSDP2."""
    # The prompt order is the same on every rank (identically seeded): only rank 0's copy is kept,
    # the other ranks send just what differs (their generators, pools, counters).
    own = tr.source.state_dict()
    sources = dist_utils.gather_objects(own if tr.dist.rank == 0 else _without_prompt_order(own), tr.dist)
    model_state, optim_state = get_state_dict(tr.student, tr.optimizer, options=FULL_STATE)
    state = {"step": tr.step, "skipped": tr.skipped, "consecutive_skips": tr.consecutive_skips,
             "world_size": tr.dist.world_size, "student": model_state, "ema": tr.ema.full_state_dict(),
             "optimizer": optim_state, "sources": sources, "torch_rng": torch.get_rng_state()}
    for term in tr.terms:
        if term.has_state:
            state[term.name] = term.state_dict()
    return state


def load_trainer_state(tr, state: dict) -> None:
    if int(state["world_size"]) != tr.dist.world_size:
        raise UserError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                        f"{tr.dist.world_size}: resume with the same number of processes")
    set_state_dict(tr.student, tr.optimizer, model_state_dict=state["student"],
                   optim_state_dict=state["optimizer"], options=FULL_STATE)
    tr.ema.load_full_state_dict(state["ema"])
    tr.source.load_state_dict(_with_prompt_order(state["sources"][tr.dist.rank], state["sources"][0]))
    torch.set_rng_state(state["torch_rng"])
    tr.step, tr.skipped = int(state["step"]), int(state["skipped"])
    tr.consecutive_skips = int(state["consecutive_skips"])
    for term in tr.terms:
        if not term.has_state:  # sCM, endpoint
            continue
        if term.name not in state:
            raise UserError(f"the checkpoint was written without objective.{term.name}: resume with "
                            f"objective.{term.name}.weight=0, or start a new run")
        term.load_state_dict(state[term.name])


def save_trainer_checkpoint(tr, folder: Path) -> Path | None:
    """Write ``folder/checkpoints/step_N.pt`` atomically (rank 0); a failed write stops the run
    naming the last good checkpoint, which stays untouched. Collective."""
    state = trainer_state(tr)  # every rank takes part
    path = None
    if tr.dist.is_main:
        try:
            path = save_checkpoint(state, folder / "checkpoints", tr.step, tr.cfg.keep_checkpoints)
        except OSError as exc:  # full disk, permissions: the previous checkpoint is untouched
            previous = latest_checkpoint(folder / "checkpoints")
            raise TrainingStopped(
                f"could not write the checkpoint of step {tr.step} ({exc.strerror or exc}): free space or fix "
                f"permissions in {folder}, then `tbcm distill --resume {folder}`; last good checkpoint: "
                f"{previous or 'none'}") from None
    dist_utils.barrier(tr.dist)
    return path
