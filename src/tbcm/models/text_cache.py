"""The per-prompt disk cache shared by the diffusers prompt encoders (Sana, FLUX).

Each encoding is one safetensors file, ``<cache>/<encoder id>/<key(prompt)>.safetensors``. The
encoder id hashes the text encoders' and tokenizers' config files and weight-file sizes, and the
dtype the encoder runs in, so encodings of another model, or of the same one in another dtype,
are never mixed up; later runs and other ranks reuse what is there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_write
from .text import TextCondition


def default_cache_dir() -> Path:
    return Path(os.environ.get("TBCM_CACHE", Path.home() / ".cache" / "tbcm")) / "text_embeddings"


def _fingerprint(folder: Path, subfolders: tuple[str, ...]) -> str:
    """Identity of text encoders + tokenizers: their config files and weight-file sizes."""
    h = hashlib.sha256()
    for sub in subfolders:
        for f in sorted((folder / sub).glob("*")):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes() if f.suffix in (".json", ".txt", ".model") and f.stat().st_size < 2**24
                         else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def encoder_cache_dir(cache_dir: str | os.PathLike | None, folder: Path, subfolders: tuple[str, ...],
                      dtype: torch.dtype) -> Path | None:
    """``cache_dir`` (``"default"``: $TBCM_CACHE/text_embeddings; ``None``: no cache) / encoder id."""
    if cache_dir is None:
        return None
    root = default_cache_dir() if cache_dir == "default" else Path(cache_dir)
    return root / f"{_fingerprint(Path(folder), subfolders)}-{str(dtype).removeprefix('torch.')}"


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
