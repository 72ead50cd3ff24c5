"""A small CNN digit classifier: the feature extractor of FID and the judge of prompt adherence.

It sees flow-space pixels ``[N, 1, 8, 8]`` in ``[-1, 1]`` (what the samplers return), has no
BatchNorm (its output for an image never depends on the rest of the batch) and is trained only on
the train part of a fixed, seeded split of scikit-learn's 1,797 digits
(:func:`tbcm.data.digits_split`, the same split the digits teacher trains on); the held-out part
(60 per digit) is the reference set of FID and the accuracy check.

The trained weights ship in ``tbcm/assets/classifier`` (``classifier.safetensors`` +
``classifier.yaml``); ``tbcm classifier train --out DIR`` makes them again.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as Fn
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

# The split lives with the data (the teacher's trainer reads it too); re-exported here, where it began.
from ..data import DIGITS_HELDOUT_PER_CLASS as HELDOUT_PER_CLASS  # noqa: F401
from ..data import DIGITS_SPLIT_SEED as SPLIT_SEED
from ..data import DigitsSplit, digits_split  # noqa: F401
from ..data import _digits_split as _split  # noqa: F401 - its cache, for tests
from ..errors import UserError, brief

FORMAT = "tbcm-classifier/1"


def builtin_classifier_path() -> Path:
    return Path(str(resources.files("tbcm") / "assets" / "classifier"))


@dataclass
class ClassifierConfig:
    """Architecture: three 3x3 convolutions (GELU, 2x2 average pooling after the 2nd and 3rd),
    then a linear feature layer of width ``feature_dim`` (GELU) and a linear head."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    feature_dim: int = 64
    image_size: int = 8
    num_classes: int = 10
    in_channels: int = 1  # 3: an RGB judge (tbcm.evaluation.labelled)


class DigitClassifier(nn.Module):
    """``forward(x [N,C,S,S] in [-1,1]) -> logits [N, num_classes]`` (``C = in_channels``);
    ``features(x) -> [N, feature_dim]`` (the penultimate layer, used for FID)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        c1, c2, c3 = self.config.channels
        side = self.config.image_size // 4
        self.convs = nn.Sequential(
            nn.Conv2d(self.config.in_channels, c1, 3, padding=1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(c3 * side * side, self.config.feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``x`` ``[N, C, S, S]`` -> ``[N, feature_dim]``."""
        return self.convs(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` ``[N,1,8,8]`` whose predicted class equals ``labels`` ``[N]``."""
    return float((model(images).argmax(1) == labels).double().mean())


def _shift(x: Tensor, gen: torch.Generator, fill: float | None = -1.0) -> Tensor:
    """Augmentation: move each image ``[N,C,S,S]`` by up to one pixel, filling with background
    ``fill`` (the digits' -1), or with ``None`` repeating the edge (coloured backgrounds)."""
    n, c, s = x.shape[0], x.shape[1], x.shape[-1]
    padded = Fn.pad(x, (1, 1, 1, 1), value=fill) if fill is not None else Fn.pad(x, (1, 1, 1, 1), mode="replicate")
    dy, dx = torch.randint(0, 3, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(s))[:, None, :, None].expand(n, c, s, s + 2)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(s))[:, None, None, :].expand(n, c, s, s)
    return out.gather(3, cols)


def train_classifier(out_dir: str | os.PathLike, steps: int = 1500, seed: int = 0, progress: bool = True,
                     overwrite: bool = False, batch_size: int = 128, lr: float = 3e-3) -> Path:
    """Train on the train split only; write ``classifier.safetensors`` + ``classifier.yaml``
    (architecture, split seed, held-out accuracy) to ``out_dir`` atomically."""
    from ..outputs import check_output_dir, staged_output_dir

    if steps < 1:
        raise UserError(f"--steps must be at least 1 (got {steps})")
    check_output_dir(out_dir, overwrite)
    split = digits_split(SPLIT_SEED)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    n = split.train_images.shape[0]
    bar = tqdm(range(steps), desc="classifier", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(n, (batch_size,), generator=gen)
        loss = Fn.cross_entropy(model(_shift(split.train_images[idx], gen)), split.train_labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    meta = {"format": FORMAT, "architecture": asdict(model.config),
            "split": {"seed": SPLIT_SEED, "train": n, "heldout": int(split.heldout_labels.numel())},
            "training": {"steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr},
            "heldout_accuracy": round(accuracy(model, split.heldout_images, split.heldout_labels), 6)}
    with staged_output_dir(out_dir, overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "classifier.safetensors"))
        (tmp / "classifier.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return Path(out_dir)


def load_model_folder(path: Path, name: str, fmt: str, build, what: str, hint: str) -> nn.Module:
    """A frozen eval-mode model from ``path/NAME.yaml`` (``format: fmt``, ``architecture``) and
    ``path/NAME.safetensors``; ``build(architecture dict) -> nn.Module``; the yaml on ``model.meta``.
    Any problem is one :class:`UserError` naming ``what`` and ``hint``."""
    if not (path / f"{name}.yaml").is_file():
        raise UserError(f"{path} has no {name}.yaml, it is not a tbcm {what} folder: {hint}")
    try:
        meta = yaml.safe_load((path / f"{name}.yaml").read_text())
        if not isinstance(meta, dict) or meta.get("format") != fmt:
            raise ValueError(f"expected format {fmt}")
        model = build(meta["architecture"])
        model.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    except Exception as exc:  # noqa: BLE001 - any problem is the same user-facing error
        raise UserError(f"{path} holds a malformed {what} ({brief(exc)}): {hint}") from None
    model.meta = meta
    return model.requires_grad_(False).eval()


def load_classifier(path: str | os.PathLike | None = None) -> DigitClassifier:
    """Load a classifier folder (default: the shipped one), frozen and in eval mode.

    Its ``classifier.yaml`` contents are on ``model.meta`` (``meta["split"]["seed"]``: the split
    it was not trained on the held-out part of). Raises :class:`UserError`.
    """
    if path is None:
        return _builtin()
    return load_model_folder(Path(path), "classifier", FORMAT, lambda arch: DigitClassifier(ClassifierConfig(**arch)),
                             "classifier", "pass a folder written by `tbcm classifier train`")


@lru_cache(maxsize=1)
def _builtin() -> DigitClassifier:
    return load_classifier(builtin_classifier_path())
