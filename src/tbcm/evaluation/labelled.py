"""A judge for any teacher trained on labelled images: FID on its own classifier's features against
held-out real images, and prompt adherence (the share of samples it reads as the requested label).

``tbcm judge train --data JUDGE.npz --reference REF.npz --out TEACHER/judge`` trains a small CNN
(:class:`tbcm.evaluation.classifier.DigitClassifier` with ``in_channels`` = the images' channels, no
BatchNorm) to tell the labels apart on images the teacher never saw, and stores beside it the
reference images of FID and a pool of the teacher's training images for the data floor. Put it in
the teacher's folder as ``judge/``: ``tbcm eval`` and the benchmarks then score every student of
that teacher with it (:func:`tbcm.evaluation.digits._suite_class`), as they score the digits with
the shipped classifier. Each class is one prompt (``template.format(label=...)``); samples are
drawn ``n`` per prompt, in the judge's prompt order.

Held out: the classifier trains on ``--data`` (give it other images than the teacher's), FID refers
to ``--reference`` (a third set), the data floor draws from ``--floor`` (the teacher's own training
images: how far real training images sit from the reference, the best a perfect copy could read).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..errors import UserError
from .classifier import ClassifierConfig, DigitClassifier, _shift, accuracy, load_model_folder
from .metrics import FIDReference, adherence, predict

FORMAT = "tbcm-judge/1"
JUDGE_FOLDER = "judge"  # inside a teacher's folder: the judge of its students
FLOOR_PER_PROMPT = 200  # training images kept per prompt for the data floor
FLOOR_SEED = 0


def _read(path: str | os.PathLike, template: str, what: str):
    """``(images [N, C, S, S] in [-1, 1], prompts [N])`` of an ``.npz`` or image folder at its own size."""
    from ..data import load_training_data

    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            shape = np.load(path, allow_pickle=False)["images"].shape
        except Exception:  # noqa: BLE001 - load_training_data names the problem
            shape = (0, 0)
        size = int(shape[-2] if len(shape) == 4 and shape[-1] in (1, 3, 4) else shape[-1])
    elif path.is_dir():
        from PIL import Image

        first = next((p for p in sorted(path.rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")), None)
        if first is None:
            raise UserError(f"{what} {path} holds no images: give an .npz (images, labels) or a folder of class folders")
        size = Image.open(first).size[0]
    else:
        raise UserError(f"{what} {path} not found: give an .npz with images and labels, or a folder of class folders")
    data = load_training_data(str(path), size, template)
    return data.images, list(data.prompts)


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _flow(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def train_judge(data: str | os.PathLike, reference: str | os.PathLike, out: str | os.PathLike,
                template: str = "{label}", floor: str | os.PathLike | None = None, steps: int = 3000,
                seed: int = 0, progress: bool = True, overwrite: bool = False, batch_size: int = 128,
                lr: float = 2e-3) -> Path:
    """Train the judge's classifier on ``data`` and write the judge folder ``out`` atomically:
    ``judge.safetensors`` (the classifier), ``reference.safetensors`` (FID reference and floor pool, uint8
    pixels ``[N, C, S, S]`` with prompt indices) and ``judge.yaml`` (prompts, architecture, the
    classifier's accuracy on the reference). ``floor``: the teacher's training images (default: none,
    no data floor)."""
    from ..outputs import check_output_dir, staged_output_dir

    if steps < 1:
        raise UserError(f"--steps must be at least 1 (got {steps})")
    if "{label}" not in template:
        raise UserError(f"--prompt-template {template!r} has no {{label}}: e.g. 'the letter {{label}}'")
    check_output_dir(out, overwrite)
    images, prompts = _read(data, template, "judge data")
    ref_images, ref_prompts = _read(reference, template, "reference")
    classes = sorted(set(prompts))
    if len(classes) < 2:
        raise UserError(f"judge data {data} has {len(classes)} label(s): a judge needs at least 2")
    if ref_images.shape[1:] != images.shape[1:]:
        raise UserError(f"reference {reference} images are {tuple(ref_images.shape[1:])}, the judge data's "
                        f"{tuple(images.shape[1:])}: give both at the teacher's size")
    unknown = sorted(set(ref_prompts) - set(classes))
    if unknown:
        raise UserError(f"reference {reference} has labels the judge data lacks ({unknown[:3]}): "
                        "give judge data of every label")
    index = {p: i for i, p in enumerate(classes)}
    labels = torch.tensor([index[p] for p in prompts])
    ref_labels = torch.tensor([index[p] for p in ref_prompts])
    c, s = int(images.shape[1]), int(images.shape[-1])
    if s % 4:
        raise UserError(f"judge images are {s}x{s}: the judge pools twice, give a size divisible by 4")

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    width = 32 if s <= 16 else 48
    model = DigitClassifier(ClassifierConfig(channels=[width, 2 * width, 4 * width], feature_dim=128,
                                             image_size=s, num_classes=len(classes), in_channels=c))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(1.0, k / steps))))
    bar = tqdm(range(steps), desc="judge", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(images.shape[0], (batch_size,), generator=gen)
        loss = Fn.cross_entropy(model(_shift(images[idx], gen, fill=None)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()

    tensors = {"reference_images": _uint8(ref_images), "reference_labels": ref_labels}
    floor_info = None
    if floor is not None:
        f_images, f_prompts = _read(floor, template, "floor data")
        f_labels = torch.tensor([index.get(p, -1) for p in f_prompts])
        g = torch.Generator().manual_seed(FLOOR_SEED)
        picked = [idx[torch.randperm(idx.numel(), generator=g)[:FLOOR_PER_PROMPT]]
                  for idx in (torch.nonzero(f_labels == k).squeeze(1) for k in range(len(classes)))]
        if min(p.numel() for p in picked) == 0:
            raise UserError(f"floor data {floor} lacks some labels: give the teacher's training images")
        picked = torch.cat(picked)
        tensors.update(floor_images=_uint8(f_images[picked]), floor_labels=f_labels[picked])
        floor_info = {"source": str(floor), "images": int(picked.numel())}
    meta = {"format": FORMAT, "architecture": asdict(model.config), "prompts": classes, "template": template,
            "shape": [c, s, s],
            "data": {"judge": str(data), "judge_images": int(images.shape[0]), "reference": str(reference),
                     "reference_images": int(ref_images.shape[0]), "floor": floor_info},
            "training": {"steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr},
            "reference_accuracy": round(accuracy(model, ref_images, ref_labels), 6)}
    with staged_output_dir(out, overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "judge.safetensors"))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "reference.safetensors"))
        (tmp / "judge.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return Path(out)


def load_judge_classifier(path: str | os.PathLike) -> DigitClassifier:
    """The judge folder's classifier, frozen, its ``judge.yaml`` on ``.meta``. Raises :class:`UserError`."""
    return load_model_folder(Path(path), "judge", FORMAT, lambda a: DigitClassifier(ClassifierConfig(**a)), "judge",
                             "pass a folder written by `tbcm judge train`")


@lru_cache(maxsize=4)
def _tensors(path: str) -> dict:
    return load_file(str(Path(path) / "reference.safetensors"))


class LabelledSuite:
    """The suite of a teacher's judge folder (bind one with :meth:`for_judge`): ``score(images, n)``
    of ``[len(prompts) n, C, S, S]`` pixels in ``[-1, 1]``, row-major (prompt, seed)."""

    name = "labelled"
    default_n = 100
    unit = "prompt"
    judge_dir: Path | None = None
    prompts: list[str] = []
    shape: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def for_judge(cls, judge_dir: str | os.PathLike) -> type:
        judge_dir = Path(judge_dir)
        meta = yaml.safe_load((judge_dir / "judge.yaml").read_text()) or {}
        if meta.get("format") != FORMAT:
            raise UserError(f"{judge_dir}/judge.yaml is not a tbcm judge: train it with `tbcm judge train`")
        return type("LabelledSuite", (cls,), {"judge_dir": judge_dir, "prompts": list(meta["prompts"]),
                                              "shape": tuple(meta["shape"])})

    def __init__(self, classifier: DigitClassifier | None = None):
        if self.judge_dir is None:
            raise TypeError("bind a judge folder first: LabelledSuite.for_judge(path)")
        self.clf = classifier if classifier is not None else load_judge_classifier(self.judge_dir)
        t = _tensors(str(self.judge_dir))
        self.reference = _flow(t["reference_images"])
        self.floor = (_flow(t["floor_images"]), t["floor_labels"]) if "floor_images" in t else None
        self.ref = FIDReference(self.reference, self.clf, shape=self.shape)

    @classmethod
    def matches(cls, channels: int, image_size: int) -> bool:
        return cls.judge_dir is not None and (channels, image_size, image_size) == tuple(cls.shape)

    @classmethod
    def check(cls, bundle, where: str) -> None:
        if (bundle.meta.channels, bundle.meta.image_size, bundle.meta.image_size) != tuple(cls.shape):
            raise UserError(f"{where} makes {bundle.meta.channels}x{bundle.meta.image_size}x{bundle.meta.image_size} "
                            f"images, the judge {cls.judge_dir} reads {cls.shape}: train a judge at the teacher's size")
        bundle.encoder.token_ids(cls.prompts)  # PromptError (a UserError) names the unknown word

    def score(self, images: torch.Tensor, n: int) -> dict:
        labels = torch.arange(len(self.prompts)).repeat_interleave(n)
        return {"fid": self.ref(images), "adherence": adherence(images, labels, self.clf)}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, feature_dim]`` judge features of ``[N, C, S, S]`` pixels."""
        return torch.cat([self.clf.features(c.float()) for c in images.split(1024)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        return predict(images, self.clf)

    def fid_against(self, reference: torch.Tensor, images: torch.Tensor) -> float:
        return FIDReference(reference, self.clf, shape=self.shape)(images)

    def data_floor(self, n: int) -> dict | None:
        """FID of the teacher's training images (``min(n, kept)`` per prompt) against the reference;
        ``None`` for a judge trained without ``--floor``."""
        if self.floor is None:
            return None
        images, labels = self.floor
        per = min(n, int(labels.bincount(minlength=len(self.prompts)).min()))
        picked = torch.cat([torch.nonzero(labels == k).squeeze(1)[:per] for k in range(len(self.prompts))])
        return {"fid": self.ref(images[picked]), "images": int(picked.numel()), "per_prompt": per,
                "real": "the teacher's training images, against the judge's held-out reference"}

    def reference_info(self) -> dict:
        return {"reference_images": int(self.reference.shape[0]), "judge": str(self.judge_dir)}

    @staticmethod
    def footer(result: dict) -> str:
        ref = result["reference"]
        return (f"{result['n_per_class']} images per prompt, cfg {result['cfg_scale']}, image seeds from "
                f"{result['seed']}, one per image; FID against {ref['reference_images']} held-out real images "
                f"on the features of the judge {ref['judge']}")

    @staticmethod
    def extra_lines(model: str, steps: str, cfg: float, scores: dict) -> list[str]:
        return []


def judge_of_teacher(teacher: str | os.PathLike | None) -> Path | None:
    """``TEACHER/judge`` where it holds a judge, else ``None``."""
    if not teacher:
        return None
    path = Path(teacher) / JUDGE_FOLDER
    return path if (path / "judge.yaml").is_file() else None
