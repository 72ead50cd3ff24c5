"""FLUX's prompt encoding (CLIP pooled projection + T5 sequence), cached per prompt on disk.

Prompts are encoded by ``FluxPipeline.encode_prompt`` itself (a pipeline holding only the two
tokenizers and text encoders), so the student is trained on exactly the conditions a
``FluxPipeline`` gives at generation time: ``embeds`` the T5 sequence ``[B, L, D]``, ``pooled`` the
CLIP pooled output ``[B, P]``. FLUX uses no text attention mask, so ``mask`` is all ones. The empty
prompt is the null condition, encoded as ``FluxPipeline`` encodes ``negative_prompt=""`` for true CFG.

``L`` is the ``max_sequence_length`` ``FluxPipeline`` defaults to, 512, or the T5 tokenizer's
``model_max_length`` where that is shorter. Encodings are cached per prompt exactly as
:class:`~tbcm.models.families.sana.text.SanaPromptEncoder` caches them.
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

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default and maximum
TEXT_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


class FluxPromptEncoder(DiskCachedEncoder, nn.Module):
    """``encode(prompts) -> TextCondition`` (``embeds [B, L, D]``, ``mask [B, L]`` ones, ``pooled [B, P]``).

    ``folder`` is a FLUX pipeline folder with ``text_encoder/`` (CLIP), ``tokenizer/``,
    ``text_encoder_2/`` (T5) and ``tokenizer_2/``. ``cache_dir`` (default
    ``$TBCM_CACHE/text_embeddings``) holds the per-prompt encodings; ``None`` disables the cache.
    """

    TEXT_MODULES = ("text_encoder", "text_encoder_2")

    def __init__(self, folder: str | os.PathLike, cache_dir: str | os.PathLike | None = "default",
                 dtype: torch.dtype | None = None):
        super().__init__()
        from diffusers import FluxPipeline
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        self.folder = Path(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.folder / "tokenizer"), local_files_only=True)
            tokenizer_2 = AutoTokenizer.from_pretrained(str(self.folder / "tokenizer_2"), local_files_only=True)
            self.text_encoder = CLIPTextModel.from_pretrained(
                str(self.folder / "text_encoder"), local_files_only=True, dtype=dtype).eval().requires_grad_(False)
            self.text_encoder_2 = T5EncoderModel.from_pretrained(
                str(self.folder / "text_encoder_2"), local_files_only=True, dtype=dtype).eval().requires_grad_(False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot load the text encoders / tokenizers of {self.folder} ({brief(exc)}): pass a "
                            f"FLUX pipeline folder with {', '.join(p + '/' for p in TEXT_PARTS)}") from None
        # The pipeline's own encode_prompt, with only the text parts loaded.
        self._pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=self.text_encoder, tokenizer=tokenizer,
                                  text_encoder_2=self.text_encoder_2, tokenizer_2=tokenizer_2, transformer=None)
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, int(tokenizer_2.model_max_length))
        self.cache_dir = encoder_cache_dir(cache_dir, self.folder, TEXT_PARTS, self.text_encoder_2.dtype)

    def config(self) -> dict:
        return {"folder": str(self.folder.resolve()), "max_sequence_length": self.max_sequence_length}

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"flux|{self.max_sequence_length}|{prompt}".encode()).hexdigest()[:32]

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> TextCondition:
        self._check_not_freed()
        device = next(self.text_encoder_2.parameters()).device
        embeds, pooled, _ = self._pipe.encode_prompt(prompts, device=device,
                                                     max_sequence_length=self.max_sequence_length)
        return TextCondition(embeds, torch.ones(embeds.shape[:2], device=device), pooled)

    def encode(self, prompts: list[str], batch_size: int = 16, progress: bool = False) -> TextCondition:
        """Encode ``prompts`` (``""`` = null condition), reading and filling the disk cache."""
        return cached_encode(prompts, self.cache_dir, self._key, self._encode_uncached, batch_size, progress)
