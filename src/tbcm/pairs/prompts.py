"""Which prompts each step uses: shuffled passes over the prompt list, sharded across ranks."""

from __future__ import annotations

import torch


class PromptSampler:
    """Walks shuffled passes over ``num_prompts`` prompts.

    Every rank draws the same global batch of ``per_rank * world_size`` ids (the order generator
    is seeded identically everywhere) and keeps its slice ``[rank::world_size]``, so ranks never
    duplicate work and the global batch does not depend on how many processes share it.
    """

    def __init__(self, num_prompts: int, seed: int, rank: int = 0, world_size: int = 1):
        self.num_prompts, self.rank, self.world_size = num_prompts, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        # the rest of the current pass, taken from the end; a tensor (8 B per prompt), not a list
        self.order = torch.empty(0, dtype=torch.long)

    def next_global_ids(self, count: int) -> torch.Tensor:
        taken = []
        need = count
        while need > 0:
            if self.order.numel() == 0:
                self.order = torch.randperm(self.num_prompts, generator=self.generator)
            k = min(need, self.order.numel())
            taken.append(self.order[-k:].flip(0))
            self.order = self.order[:-k].clone() if k < self.order.numel() else self.order[:0]
            need -= k
        return torch.cat(taken)

    def next_ids(self, per_rank: int) -> torch.Tensor:
        """``[per_rank]`` prompt ids for this rank."""
        return self.next_global_ids(per_rank * self.world_size)[self.rank::self.world_size]

    def state_dict(self) -> dict:
        return {"order": self.order.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order = state["order"].to(torch.long).clone()
        self.generator.set_state(state["generator"])
