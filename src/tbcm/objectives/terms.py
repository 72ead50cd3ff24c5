"""Loss terms as plug-ins: the interface every term implements, and what the trainer hands it.

A training step, as the trainer runs it for the terms that are on (:mod:`tbcm.objectives.registry`)::

    extras = [term.prepare(batch) for term in terms]          # no-grad work; inputs to ride along
    F, logvar, extra_F = one gradient forward on pairs + extras  # one call: DDP sees one forward
    loss = sum(term.weight * term.loss(batch, F, logvar, extra_F[term]))
    loss.backward()
    for term in terms: term.after_backward()                  # a term's own parameters step

A term never touches the student's optimiser; its own networks, optimisers and generators are
checkpointed through :meth:`LossTerm.state_dict` under its registry name, without the trainer
knowing what they are (as FastGen's methods keep ``model_dict`` / ``optimizer_dict``).
Adding a term: one file with a subclass and its config dataclass, one line in the registry.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import distributed as dist_utils
from ..models.lora import load_trainable_state, trainable_state
from ..pairs.base import Pairs


@dataclass
class TermContext:
    """What a term may use when it is built (once, before the first step).

    ``cfg`` the whole :class:`~tbcm.config.DistillConfig`; ``teacher`` the frozen guided teacher
    (TrigFlow interface); ``student`` the unwrapped student (the JVP path); ``student_template`` a
    CPU copy of the student's network at the start (the teacher plus a zero guidance embedder; a
    LoRA student's frozen base stays the teacher's tensors: copy it with
    :func:`tbcm.models.lora.copy_network`, which keeps them shared);
    ``conds`` the prompt encodings; ``image_shape`` ``(C, H, W)`` of a state; ``sigma_d`` the data
    scale; ``timestep_scale`` the network's time input per unit of flow time; ``dist`` the process group info; ``device``; ``base_seed`` the rank's pair seed (a term
    seeds its own generator from it, so its draws never shift the pairs).
    """

    cfg: Any
    teacher: Any
    student: nn.Module
    student_template: nn.Module
    conds: Any
    image_shape: tuple[int, int, int]
    sigma_d: float
    timestep_scale: float
    dist: dist_utils.DistInfo
    device: torch.device
    base_seed: int


@dataclass
class StepBatch:
    """One step as the terms see it: ``pairs`` on the device, the optimiser ``step`` (0-based),
    ``r`` the tangent ratio, ``denominator`` what a per-pair sum is divided by (the number of kept
    pairs; under DDP the global count / world size, a tensor) or ``None`` (this rank's kept count),
    and ``bf16`` whether the gradient forward runs under bfloat16 autocast."""

    pairs: Pairs
    step: int
    r: float
    denominator: Tensor | float | None
    bf16: bool = False

    def denom(self, like: Tensor) -> Tensor:
        """The per-pair sum's divisor as a tensor on ``like``'s device (no host sync)."""
        if self.denominator is None:
            return self.pairs.mask.to(like.dtype).sum().clamp(min=1.0)
        return torch.as_tensor(self.denominator, dtype=like.dtype, device=like.device).clamp(min=1e-12)


# Inputs that ride along the gradient forward: (x_norm [K,C,H,W], t [K] radians, cond, w [K])
ExtraInputs = tuple[Tensor, Tensor, Any, Tensor]


class LossTerm:
    """A loss term. Subclasses set ``name`` (its registry key and checkpoint key) and implement
    :meth:`loss`; the other hooks default to doing nothing.

    ``weight`` multiplies what :meth:`loss` returns. ``in_loss_stat``: whether the weighted loss is
    part of the logged ``loss`` column (the objective on the pairs); sample terms (GAN, DMD) log
    their own generator loss apart, as it is not on the sCM loss's scale.
    ``needs_trajectory_end``: the pairs must carry their trajectory end (``Pairs.x0``); the trainer
    asks the pair source for it, or refuses the config in one line.
    """

    name: ClassVar[str] = ""
    needs_trajectory_end: ClassVar[bool] = False
    in_loss_stat: ClassVar[bool] = True

    def __init__(self, ctx: TermContext, weight: float = 1.0):
        self.ctx = ctx
        self.weight = float(weight)

    @classmethod
    def build(cls, ctx: TermContext) -> "LossTerm | None":
        """The term for this run, or ``None`` when the config leaves it off (the default reads
        ``cfg.objective.<name>.weight``)."""
        section = getattr(ctx.cfg.objective, cls.name)
        return cls(ctx, section) if section.weight > 0 else None

    def prepare(self, batch: StepBatch) -> ExtraInputs | None:
        """No-grad work before the gradient forward; returns inputs to ride along it, or ``None``."""
        return None

    def loss(self, batch: StepBatch, F: Tensor, logvar: Tensor, extra_F: Tensor | None) -> tuple[Tensor | None, dict]:
        """``(unweighted loss or None, stats)`` from the gradient forward: ``F`` ``[B, C, H, W]`` and
        ``logvar`` ``[B]`` on the pairs (fp32, with gradients), ``extra_F`` the rows of this term's
        :meth:`prepare` inputs. ``None`` adds nothing this step. Stats are detached 0-d tensors."""
        raise NotImplementedError

    def after_backward(self) -> dict:
        """After the student's backward, before its optimiser step: the term's own update. Stats."""
        return {}

    @property
    def has_state(self) -> bool:
        """Whether the term checkpoints anything (it overrides :meth:`state_dict`); known without
        calling it, which may be collective (a trained term gathers every rank's generator)."""
        return type(self).state_dict is not LossTerm.state_dict

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TrainedTerm(LossTerm):
    """A term with a network of its own (``self.module``), its AdamW optimiser and a generator,
    all in its checkpoint state (the module under ``saved_as``; every rank's generator).
    ``seed_offset`` separates its generator's stream from the pairs' and other terms'."""

    saved_as: ClassVar[str] = "module"
    seed_offset: ClassVar[int] = 0

    def setup(self, module: nn.Module, lr: float, betas, params=None) -> None:
        """Hold ``module`` and an AdamW on ``params`` (default: all of the module's)."""
        self.module = module
        params = [p for p in (module.parameters() if params is None else params) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=0.0)
        offset = self.seed_offset or zlib.crc32(self.name.encode()) % 1000 + 100
        self.generator = torch.Generator().manual_seed(self.ctx.base_seed + offset)

    def average_gradients(self, params) -> None:
        """Average replicated (not DDP-wrapped) parameters' gradients over ranks, in one call."""
        dist_utils.average_gradients(list(params), self.ctx.dist)

    def state_dict(self) -> dict:
        # the module is replicated (rank 0's copy stands for all), its frozen weights (a LoRA
        # base) left out; every rank's own generator
        return {self.saved_as: trainable_state(self.module), "optimizer": self.optimizer.state_dict(),
                "generators": dist_utils.gather_objects(self.generator.get_state(), self.ctx.dist)}

    def load_state_dict(self, state: dict) -> None:
        load_trainable_state(self.module, state[self.saved_as])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generators"][self.ctx.dist.rank])
