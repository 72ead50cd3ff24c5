"""Encoded prompts as every network, teacher, student and pair source sees them.

:class:`TextCondition` is the one condition type of the library: each family's prompt encoder
returns it, the disk cache (:mod:`tbcm.models.text_cache`) stores it, the adapter and guidance
(:mod:`tbcm.models.adapter`) batch it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TextCondition:
    """Encoded prompts: ``embeds`` ``[B, L, D]`` (float) and ``mask`` ``[B, L]`` (1 = real token);
    ``pooled`` ``[B, P]``: an optional pooled prompt vector (FLUX's CLIP projection), else ``None``."""

    embeds: Tensor
    mask: Tensor
    pooled: Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def device(self) -> torch.device:
        return self.embeds.device

    def apply(self, fn) -> "TextCondition":
        """The condition with ``fn`` applied to each of its tensors (``None`` stays ``None``)."""
        return TextCondition(fn(self.embeds), fn(self.mask), None if self.pooled is None else fn(self.pooled))

    def index(self, idx: Tensor | slice) -> "TextCondition":
        return self.apply(lambda z: z[idx])

    def repeat_interleave(self, n: int) -> "TextCondition":
        return self.apply(lambda z: z.repeat_interleave(n, 0))

    def to(self, device) -> "TextCondition":
        return self.apply(lambda z: z.to(device))

    @staticmethod
    def cat(conds: list["TextCondition"]) -> "TextCondition":
        pooled = None if all(c.pooled is None for c in conds) else torch.cat([c.pooled for c in conds])
        return TextCondition(torch.cat([c.embeds for c in conds]), torch.cat([c.mask for c in conds]), pooled)
