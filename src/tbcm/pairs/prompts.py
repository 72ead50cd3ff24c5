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
        self.order: list[int] = []

    def next_global_ids(self, count: int) -> torch.Tensor:
        ids = []
        while len(ids) < count:
            if not self.order:
                self.order = torch.randperm(self.num_prompts, generator=self.generator).tolist()
            ids.append(self.order.pop())
        return torch.tensor(ids)

    def next_ids(self, per_rank: int) -> torch.Tensor:
        """``[per_rank]`` prompt ids for this rank."""
        return self.next_global_ids(per_rank * self.world_size)[self.rank::self.world_size]

    def state_dict(self) -> dict:
        return {"order": torch.tensor(self.order, dtype=torch.long), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order = [int(i) for i in state["order"].tolist()]
        self.generator.set_state(state["generator"])
