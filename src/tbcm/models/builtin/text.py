"""The built-in teacher's small prompt encoder: a word-level tokenizer and a tiny transformer.

Prompts are lower-cased and split on whitespace; every word must be in the vocabulary the
teacher was trained with, otherwise :class:`PromptError` names the word and the known words.
The empty prompt encodes to an all-masked sequence: the unconditional (null) condition of
classifier-free guidance.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import UserError
from ..condition import TextCondition
from .layers import MathAttention


class PromptError(UserError):
    """A prompt the encoder cannot take."""


def tokenize_words(prompt: str) -> list[str]:
    return prompt.lower().split()


class PromptEncoder(nn.Module):
    """Word embeddings + one self-attention layer. ``encode(prompts)`` -> :class:`TextCondition`.

    ``max_words`` is the padded length ``L``; ``dim`` the embedding width ``D``.
    """

    def __init__(self, vocab: list[str], dim: int = 64, max_words: int = 8, heads: int = 4):
        super().__init__()
        self.vocab = list(vocab)
        self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
        self.dim, self.max_words = dim, max_words
        self.embed = nn.Embedding(len(self.vocab), dim)
        self.pos = nn.Parameter(torch.zeros(max_words, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MathAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        nn.init.normal_(self.pos, std=0.02)

    def config(self) -> dict:
        return {"vocab": self.vocab, "dim": self.dim, "max_words": self.max_words, "heads": self.attn.heads}

    def token_ids(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``[B, L]`` (long) and mask ``[B, L]``; raises :class:`PromptError`."""
        ids = torch.zeros(len(prompts), self.max_words, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.max_words)
        for row, prompt in enumerate(prompts):
            words = tokenize_words(prompt)
            if len(words) > self.max_words:
                raise PromptError(
                    f"prompt {prompt!r} has {len(words)} words, the encoder takes at most "
                    f"{self.max_words}: shorten it"
                )
            unknown = [w for w in words if w not in self.word_to_id]
            if unknown:
                raise PromptError(
                    f"prompt {prompt!r} uses word(s) {unknown} the teacher's encoder does not know: "
                    f"use only these words: {' '.join(sorted(self.vocab))}"
                )
            for col, w in enumerate(words):
                ids[row, col] = self.word_to_id[w]
                mask[row, col] = 1.0
        return ids, mask

    def forward(self, ids: Tensor, mask: Tensor) -> TextCondition:
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        h = h + self.attn(self.norm1(h), key_mask=mask)
        h = h + self.mlp(self.norm2(h))
        h = h * mask.unsqueeze(-1)  # padded positions carry nothing
        return TextCondition(h, mask)

    @torch.no_grad()
    def encode(self, prompts: list[str], progress: bool = False) -> TextCondition:
        """Encode a list of prompts (the empty string is the null condition). ``progress`` is
        accepted as every family's encoder accepts it; this one is too fast to need a bar."""
        device = self.embed.weight.device
        ids, mask = self.token_ids(prompts)
        return self.forward(ids.to(device), mask.to(device))
