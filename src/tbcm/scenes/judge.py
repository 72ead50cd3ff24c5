"""The scenes judge: a small CNN that reads a scene's canonical attributes off its pixels, and
the FID feature extractor of scenes evaluation.

It sees flow-space pixels ``[N, 3, 32, 32]`` in ``[-1, 1]`` and has six heads (the targets of
:meth:`tbcm.scenes.generator.Labels.as_ids`): object count, relation axis, shape and colour of the
first object (reading order), shape and colour of the second (or none).  It is trained on freshly
rendered scenes of *all* 540 prompts (the generator is the ground truth, so the held-out pairs
are no secret from the judge), with a little Gaussian pixel noise so that slightly imperfect
samples are still read.  No BatchNorm: an image's scores never depend on its batch.

Weights ship in ``tbcm/assets/scenes_judge`` (``judge.safetensors`` + ``judge.yaml`` with its
accuracy on fresh real scenes); ``tbcm scenes judge-train --out DIR`` makes them again.
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
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import UserError
from .generator import AXES, COLOUR_NAMES, SHAPES, Labels, all_scenes, render_many, sample_scenes, to_flow

FORMAT = "tbcm-scenes-judge/1"
HEADS = {"count": 2, "axis": len(AXES), "shape1": len(SHAPES), "colour1": len(COLOUR_NAMES),
         "shape2": len(SHAPES) + 1, "colour2": len(COLOUR_NAMES) + 1}
TRAIN_SEED = 1000  # render seeds of training batches start here; accuracy is measured at seed 0
CHUNK = 1024


def builtin_judge_path() -> Path:
    return Path(str(resources.files("tbcm") / "assets" / "scenes_judge"))


@dataclass
class JudgeConfig:
    """Three 3x3 conv stages (GELU, 2x2 average pooling after each) and a linear feature layer of
    width ``feature_dim`` (GELU, the FID features), then one linear head per attribute."""

    channels: list[int] = field(default_factory=lambda: [24, 48, 96])
    feature_dim: int = 64


class SceneJudge(nn.Module):
    """``forward(x [N,3,32,32]) -> {head: logits [N, classes]}``; ``features(x) -> [N, feature_dim]``."""

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        self.config = config or JudgeConfig()
        c1, c2, c3 = self.config.channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(c3 * 4 * 4, self.config.feature_dim), nn.GELU())
        self.heads = nn.ModuleDict({k: nn.Linear(self.config.feature_dim, n) for k, n in HEADS.items()})

    def features(self, x: Tensor) -> Tensor:
        return self.convs(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict_ids(self, x: Tensor) -> Tensor:
        """Predicted label ids ``[N, 6]`` (long), columns in :data:`HEADS` order."""
        dtype = next(self.parameters()).dtype
        out = []
        for chunk in x.split(CHUNK):
            logits = self(chunk.to(dtype))
            out.append(torch.stack([logits[k].argmax(1) for k in HEADS], 1))
        return torch.cat(out) if out else torch.zeros(0, len(HEADS), dtype=torch.long)


def label_ids(labels: list[Labels]) -> Tensor:
    """``[N, 6]`` long targets of ``labels``."""
    return torch.tensor([lab.as_ids() for lab in labels], dtype=torch.long).reshape(-1, len(HEADS))


def judge_loss(model: SceneJudge, x: Tensor, targets: Tensor) -> Tensor:
    logits = model(x)
    return sum(Fn.cross_entropy(logits[k], targets[:, i]) for i, k in enumerate(HEADS))


def real_batch(n: int, seed: int, scenes=None) -> tuple[Tensor, Tensor]:
    """``n`` freshly rendered scenes (default: all 540, singles and pairs half and half):
    images ``[n, 3, 32, 32]`` and label ids ``[n, 6]``."""
    chosen = sample_scenes(n, seed, all_scenes() if scenes is None else scenes)
    return to_flow(render_many(chosen, seed)), label_ids([s.labels() for s in chosen])


def exact_accuracy(model: SceneJudge, images: Tensor, targets: Tensor) -> float:
    """Share of images whose six predicted attributes all equal ``targets`` (``[N, 6]``)."""
    return float((model.predict_ids(images) == targets).all(1).double().mean())


def train_judge(out_dir: str | os.PathLike, steps: int = 3000, seed: int = 0, progress: bool = True,
                overwrite: bool = False, batch_size: int = 128, lr: float = 3e-3, noise: float = 0.15,
                check_images: int = 4000) -> Path:
    """Train on freshly rendered scenes (a new batch every step); write ``judge.safetensors`` +
    ``judge.yaml`` (architecture, training, exact accuracy on ``check_images`` fresh scenes,
    clean and with ``noise``) to ``out_dir`` atomically."""
    from ..outputs import check_output_dir, staged_output_dir

    if steps < 1:
        raise UserError(f"--steps must be at least 1 (got {steps})")
    check_output_dir(out_dir, overwrite)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SceneJudge()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    bar = tqdm(range(steps), desc="judge", disable=not progress, dynamic_ncols=True)
    for step in bar:
        x, y = real_batch(batch_size, TRAIN_SEED + seed * steps + step)
        sigma = noise * torch.rand(batch_size, 1, 1, 1, generator=gen)  # 0..noise per image
        loss = judge_loss(model, x + sigma * torch.randn(x.shape, generator=gen), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    x, y = real_batch(check_images, 0)
    noisy = x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    meta = {"format": FORMAT, "architecture": asdict(model.config), "heads": HEADS,
            "training": {"steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr, "noise": noise},
            "accuracy": {"images": check_images, "render_seed": 0,
                         "exact": round(exact_accuracy(model, x, y), 6),
                         "exact_with_noise": round(exact_accuracy(model, noisy, y), 6)}}
    with staged_output_dir(out_dir, overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "judge.safetensors"))
        (tmp / "judge.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return Path(out_dir)


def load_judge(path: str | os.PathLike | None = None) -> SceneJudge:
    """Load a judge folder (default: the shipped one), frozen, in eval mode; its ``judge.yaml`` on
    ``model.meta``. Raises :class:`UserError`."""
    from ..evaluation.classifier import load_model_folder

    if path is None:
        return _builtin()
    return load_model_folder(Path(path), "judge", FORMAT, lambda arch: SceneJudge(JudgeConfig(**arch)),
                             "scenes judge", "pass a folder written by `tbcm scenes judge-train`")


@lru_cache(maxsize=1)
def _builtin() -> SceneJudge:
    return load_judge(builtin_judge_path())


def attribute_scores(pred: Tensor, target: Tensor) -> dict[str, float]:
    """GenEval-style adherence of predicted ids ``pred`` ``[N, 6]`` against the prompts' ``target``.

    * ``count``: the number of objects; ``colours`` / ``shapes``: the multiset of colours / shapes;
    * ``binding``: the multiset of (colour, shape) objects (colour attribution, order-free);
    * ``position``: two-object prompts only, everything right including the relation;
    * ``all``: the share of images where everything the prompt asks is right (exact match).
    """
    def objects(ids: Tensor) -> list[list[tuple[int, int]]]:
        out = []
        for row in ids.tolist():
            objs = [(row[2], row[3])] + ([(row[4] - 1, row[5] - 1)] if row[0] == 1 else [])
            out.append(sorted(objs))
        return out

    po, to = objects(pred), objects(target)
    n = max(1, len(po))
    two = target[:, 0] == 1
    exact = (pred == target).all(1)
    return {
        "count": float((pred[:, 0] == target[:, 0]).double().mean()) if len(po) else 0.0,
        "colours": sum(sorted(c for _, c in p) == sorted(c for _, c in t) for p, t in zip(po, to)) / n,
        "shapes": sum(sorted(s for s, _ in p) == sorted(s for s, _ in t) for p, t in zip(po, to)) / n,
        "binding": sum(p == t for p, t in zip(po, to)) / n,
        "position": float(exact[two].double().mean()) if bool(two.any()) else float("nan"),
        "all": float(exact.double().mean()) if len(po) else 0.0,
    }


def scores_of(images: Tensor, prompts: list[str], judge: SceneJudge | None = None) -> dict[str, float]:
    """:func:`attribute_scores` of ``images`` ``[N,3,32,32]`` generated for ``prompts`` (``N``)."""
    from .generator import parse_prompt

    judge = judge if judge is not None else load_judge()
    target = label_ids([parse_prompt(p).labels() for p in prompts])
    return attribute_scores(judge.predict_ids(images), target)

