"""The per-prompt disk cache shared by the diffusers prompt encoders (every diffusers family).

Each encoding is one safetensors file, ``<cache>/<encoder id>/<key(prompt)>.safetensors``. The
encoder id hashes the text encoders' and tokenizers' config files and weight-file sizes, and the
dtype the encoder runs in, so encodings of another model, or of the same one in another dtype,
are never mixed up; later runs and other ranks reuse what is there.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_write
from ..errors import UserError
from .condition import TextCondition


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


def _write_entry(path: Path, one: TextCondition) -> None:
    tensors = {"embeds": one.embeds[0].contiguous(), "mask": one.mask[0].contiguous()}
    if one.pooled is not None:
        tensors["pooled"] = one.pooled[0].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def _read_entry(path: Path) -> TextCondition:
    t = load_file(str(path))
    return TextCondition(t["embeds"][None], t["mask"][None], t["pooled"][None] if "pooled" in t else None)


def fill_cache(prompts: Sequence[str], cache_dir: Path, key: Callable[[str], str],
               encode_uncached: Callable[[list[str]], TextCondition], batch_size: int = 16,
               progress: bool = False, overwrite: bool = False) -> int:
    """Encode the prompts whose cache entry is missing (all of them with ``overwrite``: the repair
    of a damaged entry), ``batch_size`` at a time, straight into ``cache_dir`` (nothing is kept in
    memory). Entries are not read here -- at 1.4 MB each (Sana) a later run would read gigabytes
    to start -- a damaged one is found, and repaired, when a step reads it. Returns how many were encoded."""
    todo = [p for p in dict.fromkeys(prompts) if overwrite or not (cache_dir / f"{key(p)}.safetensors").is_file()]
    bar = tqdm(total=len(todo), desc="encode prompts", disable=not progress or not todo, dynamic_ncols=True)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        cond = encode_uncached(chunk).to("cpu")
        for j, p in enumerate(chunk):
            one = cond.index(slice(j, j + 1)).apply(lambda z: z.clone())  # its own storage, not the batch's
            _write_entry(cache_dir / f"{key(p)}.safetensors", one)
        bar.update(len(chunk))
    bar.close()
    return len(todo)


class CachedConditions:
    """The encodings of a prompt list, read from the per-prompt disk cache only when indexed.

    Behaves like the :class:`TextCondition` of all prompts where the pair sources use it
    (``len``, ``index(ids)``, ``to(device)``, ``device``), but host and device memory hold only
    the rows of the current batch, however many prompts there are: the keys are kept as fixed-width
    bytes (32 B per prompt for the encoders' 32-hex-digit keys). An entry that is missing or damaged is re-encoded by ``reencode``
    (the encoder's fill for one prompt) when given, else named in a one-line error.
    """

    def __init__(self, cache_dir: Path, keys: Sequence[str], prompts: Sequence[str] | None = None,
                 reencode: Callable[[list[str]], object] | None = None, device: torch.device | str = "cpu"):
        self.cache_dir = Path(cache_dir)
        self.keys = np.asarray(list(keys), dtype="S32" if all(len(k) <= 32 for k in keys) else "S64")
        self.prompts, self.reencode = prompts, reencode
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def to(self, device) -> "CachedConditions":
        out = copy.copy(self)  # the same keys, another device for the rows it serves
        out.device = torch.device(device)
        return out

    def _load(self, i: int) -> TextCondition:
        path = self.cache_dir / f"{self.keys[i].decode()}.safetensors"
        try:
            return _read_entry(path)
        except Exception as exc:  # noqa: BLE001
            if self.reencode is None or self.prompts is None:
                raise UserError(f"the prompt encoding {path} is missing or damaged ({type(exc).__name__}): delete it "
                                "and rerun, and tbcm encodes that prompt again") from None
            self.reencode([self.prompts[i]])
            return _read_entry(path)

    def index(self, idx) -> TextCondition:
        """The conditions of prompts ``idx`` (a ``[B]`` tensor or list of ids), on :attr:`device`."""
        ids = torch.as_tensor(idx).reshape(-1).tolist()
        rows = {i: self._load(i) for i in dict.fromkeys(ids)}
        return TextCondition.cat([rows[i] for i in ids]).to(self.device)


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
                found[p] = _read_entry(path)
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
                _write_entry(cache_dir / f"{key(p)}.safetensors", one)
        bar.update(len(chunk))
    bar.close()
    return TextCondition.cat([found[p] for p in prompts])


class DiskCachedEncoder:
    """What the diffusers prompt encoders share for prompt sets of any size: encode this rank's
    share straight into the disk cache, serve the rows from there, and free the text encoders
    once every prompt the run needs is cached.

    A subclass has ``cache_dir``, ``_key(prompt)``, ``_encode_uncached(prompts)`` and lists its
    text-encoder attributes in ``TEXT_MODULES``.
    """

    TEXT_MODULES: tuple[str, ...] = ()
    cache_dir: Path | None

    def fill_cache(self, prompts: Sequence[str], rank: int = 0, world_size: int = 1, batch_size: int = 16,
                   progress: bool = False) -> int:
        """Encode prompts ``rank::world_size`` that are not cached yet (each prompt on one rank)."""
        if self.cache_dir is None:
            raise UserError("streamed prompt encodings need the disk cache: set text_cache to a folder or default")
        n = fill_cache(list(prompts)[rank::world_size], self.cache_dir, self._key, self._encode_uncached,
                       batch_size, progress)
        self.prompts_encoded = getattr(self, "prompts_encoded", 0) + n  # by this process, for logs and tests
        return n

    def cached_conditions(self, prompts: Sequence[str]) -> CachedConditions:
        """All ``prompts`` as a :class:`CachedConditions` over the disk cache (fill it first)."""
        return CachedConditions(self.cache_dir, [self._key(p) for p in prompts], prompts,
                                reencode=lambda ps: fill_cache(ps, self.cache_dir, self._key, self._encode_uncached,
                                                               overwrite=True))

    def move_text_encoders(self, device) -> None:
        """Run the text encoders on ``device`` (the accelerator while a prompt set is encoded)."""
        for name in self.TEXT_MODULES:
            module = getattr(self, name, None)
            if module is not None:
                module.to(device)

    def free_text_encoders(self) -> None:
        """Drop the text encoders (Gemma-2 is ~5 GB): every later encode must hit the cache."""
        for name in self.TEXT_MODULES:
            module = getattr(self, name, None)
            if module is not None:
                module.to("meta")  # frees the weights also where the pipeline object holds a reference
        self.text_encoders_freed = True

    def _check_not_freed(self) -> None:
        if getattr(self, "text_encoders_freed", False):
            raise UserError("a prompt that is not in the encoding cache was asked for after the text encoder was "
                            "freed: add it to the prompts file (or the sample prompts) so it is encoded at start-up")
