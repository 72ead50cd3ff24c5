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
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import UserError, brief
from .text import TextCondition

MAX_SEQUENCE_LENGTH = 300


def default_cache_dir() -> Path:
    return Path(os.environ.get("TBCM_CACHE", Path.home() / ".cache" / "tbcm")) / "text_embeddings"


def _fingerprint(folder: Path, subfolders: tuple[str, ...] = ("text_encoder", "tokenizer")) -> str:
    """Identity of text encoders + tokenizers: their config files and weight-file sizes."""
    h = hashlib.sha256()
    for sub in subfolders:
        for f in sorted((folder / sub).glob("*")):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes() if f.suffix in (".json", ".txt", ".model") and f.stat().st_size < 2**24
                         else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


class SanaPromptEncoder(nn.Module):
    """``encode(prompts) -> TextCondition`` (``embeds [B, 300, D]``, ``mask [B, 300]``).

    ``folder`` is a Sana pipeline folder with ``text_encoder/`` and ``tokenizer/``.
    ``cache_dir`` (default ``$TBCM_CACHE/text_embeddings``) holds the per-prompt encodings;
    ``None`` disables the cache.
    """

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
        if cache_dir == "default":
            cache_dir = default_cache_dir()
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / _fingerprint(self.folder)

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


def cached_encode(prompts: list[str], cache_dir: Path | None, key: Callable[[str], str],
                  encode_uncached: Callable[[list[str]], TextCondition], batch_size: int = 16,
                  progress: bool = False) -> TextCondition:
    """``encode_uncached`` behind a per-prompt disk cache: ``cache_dir/key(prompt).safetensors``
    holds one prompt's ``embeds``, ``mask`` (and ``pooled``, where the condition has one).
    ``cache_dir`` ``None``: no cache. Unknown prompts are encoded ``batch_size`` at a time."""
    found: dict[str, TextCondition] = {}
    todo = []
    for p in dict.fromkeys(prompts):
        path = cache_dir / f"{key(p)}.safetensors" if cache_dir else None
        if path is not None and path.is_file():
            try:
                t = load_file(str(path))
                found[p] = TextCondition(t["embeds"][None], t["mask"][None],
                                         t["pooled"][None] if "pooled" in t else None)
                continue
            except Exception:  # noqa: BLE001 - a damaged cache entry is re-encoded
                pass
        todo.append(p)
    bar = tqdm(total=len(todo), desc="encode prompts", disable=not progress or not todo, dynamic_ncols=True)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        cond = encode_uncached(chunk)
        for j, p in enumerate(chunk):
            found[p] = one = cond.index(slice(j, j + 1)).to("cpu")
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tensors = {"embeds": one.embeds[0].contiguous(), "mask": one.mask[0].contiguous()}
                if one.pooled is not None:
                    tensors["pooled"] = one.pooled[0].contiguous()
                atomic_write(cache_dir / f"{key(p)}.safetensors", lambda tmp, t=tensors: save_file(t, str(tmp)))
        bar.update(len(chunk))
    bar.close()
    return TextCondition.cat([found[p] for p in prompts])
