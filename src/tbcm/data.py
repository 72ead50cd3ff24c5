"""Image-and-prompt data for training a teacher (distillation itself needs no images).

Sources:
* ``"digits"``: the 1,797 8x8 handwritten digits scikit-learn ships (offline);
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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from PIL import Image

from .errors import UserError, brief

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
GENERATED_IMAGES = 48000  # images drawn from a generated source ("scenes") unless told otherwise


@dataclass
class ImagePromptData:
    images: torch.Tensor  # [N, C, S, S] in [-1, 1]
    prompts: list[str]  # N prompts
    labels: np.ndarray | None = None  # [N] ints, where the source has classes


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
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [N,1,8,8] in [0,1]
    images = _resize(images, size).clamp(0, 1) * 2 - 1
    return ImagePromptData(images, [template.format(label=int(y)) for y in d.target], d.target.astype(np.int64))


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
    """``count`` scenes of the training split (:func:`tbcm.scenes.generator.split`), by ``seed``."""
    from .scenes.generator import SIZE, sample_scenes, scene_images, split

    if count < 1:
        raise UserError(f"generated_images must be at least 1 for data: scenes (got {count}): e.g. 48000")
    if size != SIZE:
        raise UserError(f"scenes are {SIZE}x{SIZE}: set image_size: {SIZE} (got {size})")
    scenes = sample_scenes(count, seed, split()[0])
    return ImagePromptData(scene_images(scenes, seed + 1), [s.prompt() for s in scenes])


def load_training_data(source: str, size: int, template: str, generated_images: int = GENERATED_IMAGES,
                       seed: int = 0) -> ImagePromptData:
    """Dispatch on ``source``: ``"digits"``, ``"scenes"`` (``generated_images`` of them, by
    ``seed``), a ``.npz`` file, or a folder of images."""
    if source == "digits":
        return load_digits(size, template)
    if source == "scenes":
        return load_scenes(size, generated_images, seed)
    path = Path(source)
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path, size, template)
    if path.is_dir():
        return load_folder(path, size, template)
    raise UserError(f"training data {source!r} not found: pass 'digits', 'scenes', an .npz file, or a folder of images")
