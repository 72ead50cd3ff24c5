"""``tbcm eval DIR --reference ROOT``: FID and CLIP score of a student on an MJHQ-30k style set.

The reference folder has the MJHQ-30k layout: ``ROOT/meta_data.json`` maps an image id to
``{"prompt": ..., "category": ..., ...}`` and the image is ``ROOT/<category>/<id>.jpg`` (or
``.png``). The first ``n`` ids in sorted order are used. For each student step count, image ``i``
is generated from the prompt of id ``i`` with seed ``seed + i`` (the same seeds at every step
count), in batches; then

* FID: torchmetrics' ``FrechetInceptionDistance`` on the 2048-d pool3 features of the FID
  InceptionV3 (:mod:`tbcm.evaluation.inception`, local weights file) between the generated images
  and the reference images (center-cropped to a square if they are not, resized to the generated
  resolution so they batch; the network resizes both to 299 itself);
* CLIP score: torchmetrics' ``CLIPScore`` of each generated image with its prompt, on a local
  CLIP folder (e.g. ``openai/clip-vit-large-patch14`` saved beforehand); prompts longer than the
  text model's context are truncated by its tokenizer.

Nothing is downloaded. Everything is checked (layout, weights, CLIP folder, prompts) before the
first image is generated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import UserError, brief
from ..generate import load_image_generator
from .evaluate import find_student
from .inception import load_inception

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUT_HINT = "pass an MJHQ-30k style folder: ROOT/meta_data.json and images ROOT/<category>/<id>.jpg"
CLIP_HINT = ("pass a local CLIP folder saved with save_pretrained (config.json, weights, tokenizer and "
             "preprocessor files), e.g. openai/clip-vit-large-patch14 downloaded beforehand")


@dataclass
class Reference:
    """The selected reference images: ``ids[i]``, ``prompts[i]``, ``paths[i]`` (sorted by id)."""

    root: Path
    ids: list[str]
    prompts: list[str]
    paths: list[Path]


def read_reference(root: str | os.PathLike, n: int | None = None) -> Reference:
    """The first ``n`` (default: all) entries of ``root/meta_data.json`` in sorted-id order, with
    their image files. Raises :class:`UserError` naming what is wrong with the layout."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--reference {root} is not a folder: {LAYOUT_HINT}")
    meta_file = root / "meta_data.json"
    if not meta_file.is_file():
        raise UserError(f"--reference {root} has no meta_data.json: {LAYOUT_HINT}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{meta_file} is not readable JSON ({brief(exc)}): {LAYOUT_HINT}") from None
    if not isinstance(meta, dict) or not meta:
        raise UserError(f"{meta_file} must be a non-empty JSON object mapping image id -> "
                        f"{{\"prompt\", \"category\"}}: {LAYOUT_HINT}")
    ids = sorted(meta)
    if n is not None:
        if n < 2:
            raise UserError(f"--n must be at least 2 for FID (got {n})")
        if n > len(ids):
            raise UserError(f"--n {n} but {meta_file} lists only {len(ids)} images: pass --n {len(ids)} or less")
        ids = ids[:n]
    elif len(ids) < 2:
        raise UserError(f"{meta_file} lists {len(ids)} image, FID needs at least 2: {LAYOUT_HINT}")
    prompts, paths, missing = [], [], []
    for image_id in ids:
        entry = meta[image_id]
        if not (isinstance(entry, dict) and isinstance(entry.get("prompt"), str)
                and isinstance(entry.get("category"), str)):
            raise UserError(f"{meta_file} entry {image_id!r} needs a string \"prompt\" and \"category\": {LAYOUT_HINT}")
        folder = root / entry["category"]
        found = next((folder / f"{image_id}{s}" for s in IMAGE_SUFFIXES if (folder / f"{image_id}{s}").is_file()), None)
        if found is None:
            missing.append(folder / f"{image_id}.jpg")
        prompts.append(entry["prompt"])
        paths.append(found)
    if missing:
        raise UserError(f"{len(missing)} of the {len(ids)} reference images are missing, e.g. {missing[0]} "
                        f"(or .png): {LAYOUT_HINT}")
    return Reference(root, ids, prompts, paths)


def load_real_image(path: Path, size: int) -> Tensor:
    """uint8 RGB ``[3, size, size]``: center-cropped to a square, resized (bicubic, antialiased)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if w != h:
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                img = img.crop((left, top, left + side, top + side))
            if img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            array = np.asarray(img, dtype=np.uint8).copy()
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"reference image {path} cannot be read ({brief(exc)}): replace or remove it") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def real_batches(paths: list[Path], size: int, batch: int, workers: int = 4) -> Iterator[Tensor]:
    """uint8 ``[B, 3, size, size]`` batches of the images at ``paths`` (decoded in threads)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), batch):
            yield torch.stack(list(pool.map(lambda p: load_real_image(p, size), paths[start:start + batch])))


class ClipFeatures(nn.Module):
    """A transformers ``CLIPModel`` as torchmetrics' ``CLIPScore`` calls it: transformers 5
    returns model outputs from ``get_*_features``, torchmetrics 1.9 wants the embeddings."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _embeds(out) -> Tensor:
        return out if isinstance(out, Tensor) else out.pooler_output

    def get_image_features(self, pixel_values: Tensor, **kwargs) -> Tensor:
        return self._embeds(self.model.get_image_features(pixel_values=pixel_values, **kwargs))

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs) -> Tensor:
        return self._embeds(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs))


class ClipProcessor:
    """A ``CLIPProcessor`` whose text side truncates to the text model's context (keeping the
    end-of-text token the text embedding is read from) instead of cutting ids after padding."""

    def __init__(self, processor, max_length: int):
        self.processor = processor
        self.max_length = int(max_length)

    def __call__(self, text=None, images=None, **kwargs):
        if text is not None and images is not None:
            raise ValueError("one modality per call")
        if text is not None:
            return self.processor.tokenizer(text, truncation=True, max_length=self.max_length, **kwargs)
        kwargs.pop("padding", None)
        return self.processor.image_processor(images=images, **kwargs)


def clip_loader(clip_dir: str | os.PathLike):
    """A callable returning ``(model, processor)`` from a local CLIP folder, as
    ``CLIPScore(model_name_or_path=...)`` takes it (torchmetrics refuses plain local paths).
    Raises :class:`UserError` if the folder is missing or cannot be loaded (checked eagerly)."""
    clip_dir = Path(clip_dir)
    if not (clip_dir / "config.json").is_file():
        raise UserError(f"--clip {clip_dir} is not a CLIP model folder (no config.json): {CLIP_HINT}")
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError:
        raise UserError("the CLIP score needs transformers: pip install 'tbcm[diffusers]'") from None
    try:
        model = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval().requires_grad_(False)
        processor = CLIPProcessor.from_pretrained(str(clip_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any load problem is the same user-facing error
        raise UserError(f"--clip {clip_dir} cannot be loaded ({brief(exc)}): {CLIP_HINT}") from None
    pair = (ClipFeatures(model), ClipProcessor(processor, model.config.text_config.max_position_embeddings))
    return lambda: pair


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_counts(steps: list[int], batch: int) -> None:
    if not steps or any(s < 1 for s in steps):
        raise UserError(f"--steps must be whole numbers >= 1 (got {steps}): e.g. --steps 1,2,4")
    if batch < 1:
        raise UserError(f"--batch must be at least 1 (got {batch})")


@torch.no_grad()
def evaluate_realscale(path: str | os.PathLike, reference: str | os.PathLike, inception: str | os.PathLike,
                       clip: str | os.PathLike, student_steps: list[int] = (1, 2, 4), n: int | None = None,
                       batch: int = 16, cfg_scale: float | None = None, seed: int = 0,
                       shift: float | None = None, device: str | torch.device | None = None,
                       progress: bool = True, fidelity: bool = False) -> dict:
    """FID and CLIP score of the student in ``path`` (run or student folder) at each step count.

    Returns ``{"student": {"1": {"fid", "clip_score"}, ...}, "reference": {"root", "images"},
    "cfg_scale", "seed", "family", "resolution"}``. ``fidelity``: also ``"fidelity"``, the student
    against the teacher it copies on the same prompts and seeds (image ``i``: reference prompt
    ``i``, seed ``seed + i``), paired latent error and FID on the same Inception features
    (:func:`tbcm.evaluation.evaluate.evaluate`'s ``"fidelity"``; ``path`` must be the run folder,
    whose ``config.yaml`` names the teacher).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.multimodal.clip_score import CLIPScore

    student_steps = list(student_steps)
    _check_counts(student_steps, batch)
    device = torch.device(device) if device is not None else _default_device()
    student_dir, _ = find_student(path)
    ref = read_reference(reference, n)
    features = load_inception(inception)
    make_clip = clip_loader(clip)
    # The student is loaded (and the prompts checked) once, before anything is computed.
    gen = load_image_generator(student_dir, student_steps[0], cfg_scale, shift, device=device)
    gen.check_prompts(ref.prompts)
    size, used_cfg = int(gen.resolution), gen.cfg_scale

    fid = FrechetInceptionDistance(feature=features, reset_real_features=False).to(device)
    clip_score = CLIPScore(model_name_or_path=make_clip).to(device)
    count = len(ref.ids)
    bar_opts = {"disable": not progress, "dynamic_ncols": True, "unit": "img", "total": count}
    with tqdm(desc="reference", **bar_opts) as bar:
        for images in real_batches(ref.paths, size, batch):
            fid.update(images.to(device), real=True)
            bar.update(images.shape[0])

    result: dict = {"student": {}}
    for steps in student_steps:
        fid.reset()  # the generated side only (reset_real_features=False)
        clip_score.reset()
        with tqdm(desc=f"{steps}-step", **bar_opts) as bar:
            for start in range(0, count, batch):
                prompts = ref.prompts[start:start + batch]
                images = gen.generate(prompts, [seed + i for i in range(start, start + len(prompts))], steps)
                images = images.to(device)
                fid.update(images, real=False)
                clip_score.update(images, prompts)
                bar.update(len(prompts))
        result["student"][str(steps)] = {"fid": float(fid.compute()), "clip_score": float(clip_score.compute())}
    result.update({"reference": {"root": str(ref.root), "images": count}, "cfg_scale": used_cfg,
                   "seed": seed, "family": gen.family, "resolution": size})
    if fidelity:
        from .evaluate import evaluate

        result["fidelity"] = evaluate(path, student_steps, 1, cfg_scale=cfg_scale, seed=seed, student_shift=shift,
                                      fidelity=True, prompts=ref.prompts, inception=features, batch=batch,
                                      device=device, progress=progress, judged=False)["fidelity"]
    return result


def format_realscale_table(result: dict) -> str:
    """A small text table of :func:`evaluate_realscale`'s result."""
    lines = [f"{'steps':>5} {'FID':>10} {'CLIP score':>11}"]
    for steps, s in result["student"].items():
        lines.append(f"{steps:>5} {s['fid']:>10.4f} {s['clip_score']:>11.4f}")
    ref = result["reference"]
    lines.append(f"{ref['images']} reference images from {ref['root']} at {result['resolution']}px, "
                 f"cfg {result['cfg_scale']}, seed {result['seed']} (image i: seed + i); "
                 "FID on InceptionV3 pool3 features, CLIP score x100 cosine")
    if "fidelity" in result:
        from .table import _fidelity_lines

        lines += _fidelity_lines(result)
    return "\n".join(lines)
