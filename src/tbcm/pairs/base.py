"""The one record every pair source yields, and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..models.condition import TextCondition


@dataclass
class Pairs:
    """``N`` training pairs in TrigFlow units.

    * ``x_t``  ``[N, C, H, W]`` unnormalised TrigFlow states;
    * ``t``    ``[N]`` TrigFlow angles (radians, in ``(0, pi/2)``);
    * ``u``    ``[N, C, H, W]`` guided teacher velocity ``dx_t/dt`` at ``(x_t, t)`` (the tangent);
    * ``cond`` the prompt condition of each pair (batch ``N``);
    * ``w``    ``[N]`` CFG scale the tangent was computed with (the student's guidance input);
    * ``mask`` ``[N]`` loss weight in ``{0, 1}`` (0 = dropped by a filter);
    * ``prompt_ids`` ``[N]`` index of each pair's prompt in the prompt list (for caches);
    * ``x0``   ``[N, C, H, W]`` the final sample of each pair's teacher trajectory, or ``None``
      (kept only when a loss term needs it: the endpoint target, the adversarial term's real side).
    """

    x_t: Tensor
    t: Tensor
    u: Tensor
    cond: TextCondition
    w: Tensor
    mask: Tensor
    prompt_ids: Tensor | None = None
    x0: Tensor | None = None

    def __len__(self) -> int:
        return self.x_t.shape[0]

    @staticmethod
    def cat(batches: "list[Pairs]") -> "Pairs":
        """One batch of the pairs of ``batches``, in order (``x0`` kept only if every batch has it)."""
        x0 = None if any(b.x0 is None for b in batches) else torch.cat([b.x0 for b in batches])
        ids = None if any(b.prompt_ids is None for b in batches) else torch.cat([b.prompt_ids for b in batches])
        return Pairs(torch.cat([b.x_t for b in batches]), torch.cat([b.t for b in batches]),
                     torch.cat([b.u for b in batches]), TextCondition.cat([b.cond for b in batches]),
                     torch.cat([b.w for b in batches]), torch.cat([b.mask for b in batches]), ids, x0)

    def to(self, device) -> "Pairs":
        """The same pairs on ``device`` (``prompt_ids`` stay where they are: an index of the list)."""
        return Pairs(self.x_t.to(device), self.t.to(device), self.u.to(device), self.cond.to(device),
                     self.w.to(device), self.mask.to(device), self.prompt_ids,
                     None if self.x0 is None else self.x0.to(device))


class PairSource(Protocol):
    """What the trainer needs of a source: the next batch, and its position for exact resume."""

    def next_pairs(self, num_prompts: int) -> Pairs:
        """Pairs of ``num_prompts`` trajectories (or prompts) for this rank."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
