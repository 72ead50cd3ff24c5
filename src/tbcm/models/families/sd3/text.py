"""SD3's prompt encoding (two CLIP encoders + T5, pooled and sequence embeddings), cached per prompt.

Prompts are encoded by ``StableDiffusion3Pipeline.encode_prompt`` itself (a pipeline holding only
the three tokenizers and text encoders), so the student is trained on exactly the conditions a
``StableDiffusion3Pipeline`` gives: ``embeds`` ``[B, N + L, D]`` -- the two CLIP penultimate
hidden states (``N`` tokens, 77 for SD3) side by side, zero-padded to T5's width ``D``, then the T5
sequence -- and ``pooled`` ``[B, P]``, the two CLIP projections side by side. SD3 uses no text
mask (``mask`` all ones). The empty prompt is the null condition, encoded as the pipeline encodes ``negative_prompt=""``.

``L`` is the pipeline's default ``max_sequence_length``, 256, or the T5 tokenizer's
``model_max_length`` where that is shorter. Encodings go through the disk cache and streaming of
:mod:`tbcm.models.text_cache`, as every diffusers family's do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ....errors import UserError, brief
from ...condition import TextCondition
from ...text_cache import DiskCachedEncoder, cached_encode, encoder_cache_dir

MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default
TEXT_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")


class SD3PromptEncoder(DiskCachedEncoder, nn.Module):
    """``encode(prompts) -> TextCondition`` (``embeds [B, N + L, D]``, ``mask`` ones, ``pooled [B, P]``).

    ``folder`` is an SD3 pipeline folder with ``text_encoder/``, ``text_encoder_2/`` (CLIP with
    projection), ``text_encoder_3/`` (T5) and their ``tokenizer*/``. ``cache_dir`` (default
    ``$TBCM_CACHE/text_embeddings``) holds the per-prompt encodings; ``None`` disables the cache.
    """

    TEXT_MODULES = ("text_encoder", "text_encoder_2", "text_encoder_3")

    def __init__(self, folder: str | os.PathLike, cache_dir: str | os.PathLike | None = "default",
                 dtype: torch.dtype | None = None):
        super().__init__()
        from diffusers import StableDiffusion3Pipeline
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        self.folder = Path(folder)
        try:
            tokenizers = [AutoTokenizer.from_pretrained(str(self.folder / name), local_files_only=True)
                          for name in ("tokenizer", "tokenizer_2", "tokenizer_3")]
            self.text_encoder, self.text_encoder_2 = (
                CLIPTextModelWithProjection.from_pretrained(str(self.folder / name), local_files_only=True,
                                                            dtype=dtype).eval().requires_grad_(False)
                for name in ("text_encoder", "text_encoder_2"))
            self.text_encoder_3 = T5EncoderModel.from_pretrained(
                str(self.folder / "text_encoder_3"), local_files_only=True, dtype=dtype).eval().requires_grad_(False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot load the text encoders / tokenizers of {self.folder} ({brief(exc)}): pass an "
                            f"SD3 pipeline folder with {', '.join(p + '/' for p in TEXT_PARTS)}") from None
        # The pipeline's own encode_prompt, with only the text parts loaded.
        self._pipe = StableDiffusion3Pipeline(
            transformer=None, scheduler=None, vae=None, text_encoder=self.text_encoder, tokenizer=tokenizers[0],
            text_encoder_2=self.text_encoder_2, tokenizer_2=tokenizers[1], text_encoder_3=self.text_encoder_3,
            tokenizer_3=tokenizers[2])
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(tokenizers[2].model_max_length))
        self.cache_dir = encoder_cache_dir(cache_dir, self.folder, TEXT_PARTS, self.text_encoder_3.dtype)

    def config(self) -> dict:
        return {"folder": str(self.folder.resolve()), "max_sequence_length": self.max_sequence_length}

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"sd3|{self.max_sequence_length}|{prompt}".encode()).hexdigest()[:32]

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> TextCondition:
        self._check_not_freed()
        device = next(self.text_encoder_3.parameters()).device
        embeds, _, pooled, _ = self._pipe.encode_prompt(prompts, None, None, device=device,
                                                        do_classifier_free_guidance=False,
                                                        max_sequence_length=self.max_sequence_length)
        return TextCondition(embeds, torch.ones(embeds.shape[:2], device=device), pooled)

    def encode(self, prompts: list[str], batch_size: int = 16, progress: bool = False) -> TextCondition:
        """Encode ``prompts`` (``""`` = null condition), reading and filling the disk cache."""
        return cached_encode(prompts, self.cache_dir, self._key, self._encode_uncached, batch_size, progress)
