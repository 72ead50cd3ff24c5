"""Image-and-prompt data for training a teacher (distillation itself needs no images).

Sources:
* ``"digits"``: the train part (1,197 images) of a fixed, seeded split of the 1,797 8x8
  handwritten digits scikit-learn ships (offline, :func:`digits_split`); the other 600 (60 per
  digit) are the FID reference of ``tbcm eval``, so a teacher trained on ``"digits"`` never sees
  one; ``"digits_all"``: all 1,797, for whoever asks for them explicitly;
* ``"scenes"``: procedurally generated 32x32 scenes of coloured shapes (:mod:`tbcm.scenes`), the
  training split only (held-out object pairs never appear), ``generated_images`` of them;
* a folder of images: ``DIR/<label>/*.png|jpg`` (class folders) or flat ``DIR/*.png`` with an
  optional ``DIR/prompts.txt`` (``filename<TAB>prompt`` per line);
* an ``.npz`` with ``images`` (``[N,H,W]``, ``[N,H,W,C]`` or ``[N,C,H,W]``, uint8 0..255 or float
  0..1) and ``labels`` (ints or strings) or ``prompts`` (strings).

Images come back as float tensors ``[N, C, S, S]`` in ``[-1, 1]`` (flow space), resized to ``S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from PIL import Image

from .errors import UserError, brief

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GENERATED_IMAGES = 48000  # images drawn from a generated source ("scenes") unless told otherwise
DIGITS_SPLIT_SEED = 0  # the one split of the digits: the teacher trains on its train part, FID refers to the rest
DIGITS_HELDOUT_PER_CLASS = 60  # 600 held-out images (the FID reference), 1,197 for training


@dataclass
class ImagePromptData:
    images: torch.Tensor  # [N, C, S, S] in [-1, 1]
    prompts: list[str]  # N prompts
    labels: np.ndarray | None = None  # [N] ints, where the source has classes
    split: dict | None = None  # which part of a split source these are (recorded with a teacher)


def read_prompts_file(path: str | Path) -> list[str]:
    """One prompt per line; blank lines are skipped. Raises :class:`UserError` if none."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist: pass a text file with one prompt per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"prompts file {path} is not UTF-8 text: save it as UTF-8, one prompt per line") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"prompts file {path} has no prompts: write one prompt per line")
    return prompts


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return Fn.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def load_digits(size: int, template: str) -> ImagePromptData:
    """All 1,797 of scikit-learn's digits, in its order (``data: digits_all``)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [N,1,8,8] in [0,1]
    images = _resize(images, size).clamp(0, 1) * 2 - 1
    return ImagePromptData(images, [template.format(label=int(y)) for y in d.target], d.target.astype(np.int64),
                           split={"name": "all", "images": int(images.shape[0])})


@dataclass
class DigitsSplit:
    """Images ``[N, 1, 8, 8]`` in ``[-1, 1]`` with labels ``[N]`` (long), for train and held-out."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor


@lru_cache(maxsize=4)
def digits_split_indices(seed: int = DIGITS_SPLIT_SEED) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(train, held-out)`` indices (sorted) into scikit-learn's 1,797 digits: per digit, the
    first 60 of a permutation seeded by ``seed`` are held out (600), the rest are train (1,197)."""
    from sklearn.datasets import load_digits as sk_digits

    labels = torch.as_tensor(sk_digits().target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    held, train = [], []
    for d in range(10):  # stratified: the first 60 of a seeded permutation of each digit are held out
        idx = torch.nonzero(labels == d).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        held.append(idx[:DIGITS_HELDOUT_PER_CLASS])
        train.append(idx[DIGITS_HELDOUT_PER_CLASS:])
    return tuple(torch.cat(train).sort().values.tolist()), tuple(torch.cat(held).sort().values.tolist())


@lru_cache(maxsize=4)
def _digits_split(seed: int) -> DigitsSplit:
    data = load_digits(8, "{label}")
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    train_idx, held_idx = (torch.tensor(i) for i in digits_split_indices(seed))
    return DigitsSplit(data.images[train_idx], labels[train_idx], data.images[held_idx], labels[held_idx])


def digits_split(seed: int = DIGITS_SPLIT_SEED) -> DigitsSplit:
    """The fixed split of scikit-learn's digits: 1,197 train / 600 held-out (60 per digit), at 8x8.

    The held-out part is the FID reference of ``tbcm eval`` and the classifier's accuracy check;
    the teacher (``data: digits``) and the classifier train on the train part only."""
    s = _digits_split(seed)
    return DigitsSplit(*(t.clone() for t in (s.train_images, s.train_labels, s.heldout_images, s.heldout_labels)))


def load_digits_train(size: int, template: str, seed: int = DIGITS_SPLIT_SEED) -> ImagePromptData:
    """The train part of :func:`digits_split` (``data: digits``): no FID reference image is in it."""
    data = load_digits(size, template)
    train_idx, held_idx = digits_split_indices(seed)
    which = torch.tensor(train_idx)
    return ImagePromptData(data.images[which], [data.prompts[i] for i in train_idx], data.labels[list(train_idx)],
                           split={"name": "train", "seed": seed, "images": len(train_idx),
                                  "heldout": len(held_idx), "total": len(train_idx) + len(held_idx)})


def _to_nchw(arr: np.ndarray, source: str) -> torch.Tensor:
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim != 4:
        raise UserError(f"{source}: images must be [N,H,W], [N,H,W,C] or [N,C,H,W], got shape {arr.shape}")
    x = torch.tensor(arr.astype(np.float32))
    if arr.dtype == np.uint8 or x.max() > 1.5:
        x = x / 255.0
    return x


def load_npz(path: Path, size: int, template: str) -> ImagePromptData:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot read {path} as .npz ({brief(exc)}): save it with numpy.savez") from None
    if "images" not in z:
        raise UserError(f"{path} has no 'images' array (has {list(z.keys())}): save images=... with labels= or prompts=")
    images = _to_nchw(z["images"], str(path))
    if "prompts" in z:
        prompts, labels = [str(p) for p in z["prompts"]], None
    elif "labels" in z:
        labels = z["labels"]
        prompts = [template.format(label=str(y)) for y in labels]
        labels = labels if np.issubdtype(labels.dtype, np.integer) else None
    else:
        raise UserError(f"{path} has neither 'labels' nor 'prompts': add one of them, one per image")
    if len(prompts) != images.shape[0]:
        raise UserError(f"{path}: {images.shape[0]} images but {len(prompts)} labels/prompts: give one per image")
    return ImagePromptData(_resize(images, size).clamp(0, 1) * 2 - 1, prompts, labels)


def _read_image(path: Path, mode: str) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    return torch.tensor(arr if arr.ndim == 3 else arr[..., None]).permute(2, 0, 1)


def load_folder(path: Path, size: int, template: str) -> ImagePromptData:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    files: list[tuple[Path, str]] = []
    if class_dirs:
        for d in class_dirs:
            files += [(f, template.format(label=d.name)) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    else:
        captions = {}
        if (path / "prompts.txt").is_file():
            for line in (path / "prompts.txt").read_text(encoding="utf-8").splitlines():
                if "\t" in line:
                    name, prompt = line.split("\t", 1)
                    captions[name.strip()] = prompt.strip()
        for f in sorted(path.iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                if f.name not in captions:
                    raise UserError(f"{f} has no prompt: put images in class folders DIR/<label>/, "
                                    f"or list 'filename<TAB>prompt' lines in {path / 'prompts.txt'}")
                files.append((f, captions[f.name]))
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found in {path}: use DIR/<label>/*.png")
    with Image.open(files[0][0]) as first:
        mode = "L" if first.mode in ("L", "1", "I", "I;16", "LA") else "RGB"
    images = torch.stack([_resize(_read_image(f, mode)[None], size)[0] for f, _ in files])
    return ImagePromptData(images.clamp(0, 1) * 2 - 1, [p for _, p in files])


def load_scenes(size: int, count: int, seed: int) -> ImagePromptData:
    """``count`` scenes of the training split (:func:`tbcm.scenes.generator.split`), by ``seed``:
    the scenes drawn with ``seed``, rendered with ``seed + 1`` (``tbcm eval``'s FID reference is
    rendered with other seeds, :data:`tbcm.scenes.evaluate.REF_SEED`)."""
    from .scenes.generator import SIZE, SPLIT_SEED, sample_scenes, scene_images, split

    if count < 1:
        raise UserError(f"generated_images must be at least 1 for data: scenes (got {count}): e.g. 48000")
    if size != SIZE:
        raise UserError(f"scenes are {SIZE}x{SIZE}: set image_size: {SIZE} (got {size})")
    scenes = sample_scenes(count, seed, split()[0])
    return ImagePromptData(scene_images(scenes, seed + 1), [s.prompt() for s in scenes],
                           split={"name": "train", "seed": SPLIT_SEED, "images": count,
                                  "scene_seed": seed, "render_seed": seed + 1})


def load_training_data(source: str, size: int, template: str, generated_images: int = GENERATED_IMAGES,
                       seed: int = 0) -> ImagePromptData:
    """Dispatch on ``source``: ``"digits"`` (the train split), ``"digits_all"``, ``"scenes"``
    (``generated_images`` of them, by ``seed``), a ``.npz`` file, or a folder of images."""
    if source == "digits":
        return load_digits_train(size, template)
    if source == "digits_all":
        return load_digits(size, template)
    if source == "scenes":
        return load_scenes(size, generated_images, seed)
    path = Path(source)
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path, size, template)
    if path.is_dir():
        return load_folder(path, size, template)
    raise UserError(f"training data {source!r} not found: pass 'digits', 'digits_all', 'scenes', an .npz file, "
                    "or a folder of images")
