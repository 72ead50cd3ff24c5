"""A trajectory pool: a pair source that wraps the trajectory source.

It rolls out ``pool_prompts`` trajectories at once (one batched rollout, sized for the device),
keeps their pairs, and serves each step's pairs drawn at random from the whole pool, so a step's
pairs come from many trajectories instead of all 15 points of the same few prompts. When the
pool holds fewer pairs than a step needs it is refilled (the remainder is kept and mixed in).
Each pair is served ``reuse`` times (default once).

The pool stores prompt ids, not text conditions (those are re-indexed from the encoded prompts
when a batch is served), and is part of :meth:`state_dict`, so an exact resume restores it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Pairs
from .trajectory import TrajectoryPairSource


class TrajectoryPool:
    """``next_pairs(num_prompts) -> Pairs`` with as many pairs as ``num_prompts`` trajectories
    give, drawn from a pool refilled ``pool_prompts`` trajectories at a time.

    ``inner`` is the :class:`TrajectoryPairSource` (its prompt sampler, generator and teacher-call
    count are used as they are); ``generator`` draws the pool's permutations.
    """

    def __init__(self, inner: TrajectoryPairSource, pool_prompts: int, reuse: int = 1,
                 generator: torch.Generator | None = None):
        if pool_prompts < 1 or reuse < 1:
            raise ValueError(f"pool_prompts and reuse must be >= 1, got {pool_prompts}, {reuse}")
        self.inner, self.pool_prompts, self.reuse = inner, int(pool_prompts), int(reuse)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.pool: dict[str, Tensor] | None = None  # x_t, t, u, w, mask, prompt_ids (, x0): [M, ...] each
        self.pairs_per_prompt = 0  # learnt from the first refill (K - 1 per prompt)

    @property
    def teacher_calls(self) -> int:
        return self.inner.teacher_calls

    @property
    def conds(self):
        return self.inner.conds

    def __len__(self) -> int:
        return 0 if self.pool is None else int(self.pool["t"].shape[0])

    @property
    def pool_mb(self) -> float:
        """Memory held by the pool's tensors, MB (bounded by ``(pool_prompts * reuse + one step)`` pairs)."""
        if self.pool is None:
            return 0.0
        return sum(v.numel() * v.element_size() for v in self.pool.values()) / 2**20

    def _refill(self) -> None:
        fresh = self.inner.next_pairs(self.pool_prompts)
        self.pairs_per_prompt = len(fresh) // self.pool_prompts
        new = {"x_t": fresh.x_t, "t": fresh.t, "u": fresh.u, "w": fresh.w, "mask": fresh.mask,
               "prompt_ids": fresh.prompt_ids.to(fresh.t.device)}
        if fresh.x0 is not None:  # the trajectories' final samples (the adversarial term's real side)
            new["x0"] = fresh.x0
        if self.reuse > 1:
            new = {k: v.repeat(self.reuse, *([1] * (v.ndim - 1))) for k, v in new.items()}
        if self.pool is not None:
            new = {k: torch.cat([self.pool[k], v]) for k, v in new.items()}
        perm = torch.randperm(new["t"].shape[0], generator=self.generator).to(new["t"].device)
        self.pool = {k: v[perm] for k, v in new.items()}

    def next_pairs(self, num_prompts: int) -> Pairs:
        if self.pool is None:
            self._refill()
        need = num_prompts * self.pairs_per_prompt
        while len(self) < need:
            self._refill()
        take = {k: v[:need] for k, v in self.pool.items()}
        self.pool = {k: v[need:] for k, v in self.pool.items()}
        ids = take["prompt_ids"]
        return Pairs(x_t=take["x_t"], t=take["t"], u=take["u"], cond=self.conds.index(ids), w=take["w"],
                     mask=take["mask"], prompt_ids=ids.cpu(), x0=take.get("x0"))

    def state_dict(self) -> dict:
        state = {"inner": self.inner.state_dict(), "generator": self.generator.get_state(),
                 "pairs_per_prompt": torch.tensor(self.pairs_per_prompt)}
        if self.pool is not None:
            state["pool"] = {k: v.detach().cpu().clone() for k, v in self.pool.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.generator.set_state(state["generator"])
        self.pairs_per_prompt = int(state["pairs_per_prompt"])
        device = self.conds.device
        self.pool = {k: v.to(device) for k, v in state["pool"].items()} if "pool" in state else None
