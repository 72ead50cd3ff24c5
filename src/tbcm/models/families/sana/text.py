"""Sana's prompt encoding (Gemma-2 + tokenizer from the pipeline folder), cached per prompt on disk.

Prompts are encoded by ``SanaSprintPipeline.encode_prompt`` itself -- the complex human
instruction prefix, 300 tokens, the ``[0] + last 299`` token selection -- so the student is trained
on exactly the conditions the exported pipeline gives it at generation time. The empty prompt is
the null condition of classifier-free guidance and is encoded as ``SanaPipeline`` encodes its
negative prompt: no instruction prefix, padded to the same length.

Each encoding is one safetensors file named by a hash of the encoder's identity, the settings and
the prompt, so later runs (and other ranks) reuse it instead of running Gemma again.
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

MAX_SEQUENCE_LENGTH = 300


class SanaPromptEncoder(DiskCachedEncoder, nn.Module):
    """``encode(prompts) -> TextCondition`` (``embeds [B, 300, D]``, ``mask [B, 300]``).

    ``folder`` is a Sana pipeline folder with ``text_encoder/`` and ``tokenizer/``.
    ``cache_dir`` (default ``$TBCM_CACHE/text_embeddings``) holds the per-prompt encodings;
    ``None`` disables the cache.
    """

    TEXT_MODULES = ("text_encoder",)

    def __init__(self, folder: str | os.PathLike, cache_dir: str | os.PathLike | None = "default",
                 complex_human_instruction: bool = True, dtype: torch.dtype | None = None):
        super().__init__()
        from diffusers import SanaSprintPipeline
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.folder / "tokenizer"), local_files_only=True)
            self.text_encoder = AutoModel.from_pretrained(str(self.folder / "text_encoder"), local_files_only=True,
                                                          dtype=dtype).eval().requires_grad_(False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot load the text encoder / tokenizer of {self.folder} ({brief(exc)}): pass a "
                            "Sana pipeline folder with text_encoder/ and tokenizer/") from None
        # The pipeline's own encode_prompt, with only the text parts loaded.
        self._pipe = SanaSprintPipeline(tokenizer=tokenizer, text_encoder=self.text_encoder, vae=None,
                                        transformer=None, scheduler=None)
        self.use_chi = bool(complex_human_instruction)
        self.cache_dir = encoder_cache_dir(cache_dir, self.folder, ("text_encoder", "tokenizer"),
                                           self.text_encoder.dtype)

    @property
    def tokenizer(self):
        return self._pipe.tokenizer

    def config(self) -> dict:
        return {"folder": str(self.folder.resolve()), "complex_human_instruction": self.use_chi}

    @property
    def instruction(self) -> list[str] | None:
        import inspect

        from diffusers import SanaSprintPipeline

        if not self.use_chi:
            return None
        return inspect.signature(SanaSprintPipeline.__call__).parameters["complex_human_instruction"].default

    def _key(self, prompt: str) -> str:
        h = hashlib.sha256(f"{self.use_chi}|{MAX_SEQUENCE_LENGTH}|{prompt}".encode())
        return h.hexdigest()[:32]

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> TextCondition:
        self._check_not_freed()
        device = next(self.text_encoder.parameters()).device
        real = [p for p in prompts if p != ""]
        rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if real:
            embeds, mask = self._pipe.encode_prompt(real, device=device, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                                    complex_human_instruction=self.instruction)
            rows.update({p: (e, m) for p, e, m in zip(real, embeds, mask)})
        if "" in prompts:  # the null condition: SanaPipeline's negative-prompt encoding
            embeds, mask = self._pipe._get_gemma_prompt_embeds([""], device=device, dtype=self.text_encoder.dtype,
                                                               max_sequence_length=MAX_SEQUENCE_LENGTH,
                                                               complex_human_instruction=None)
            rows[""] = (embeds[0], mask[0])
        return TextCondition(torch.stack([rows[p][0] for p in prompts]),
                             torch.stack([rows[p][1] for p in prompts]).float())

    def encode(self, prompts: list[str], batch_size: int = 16, progress: bool = False) -> TextCondition:
        """Encode ``prompts`` (``""`` = null condition), reading and filling the disk cache."""
        return cached_encode(prompts, self.cache_dir, self._key, self._encode_uncached, batch_size, progress)
