"""The distillation loop: pairs from the source, the sCM step on the student, EMA, logging,
and at the end the student folder, its config and the comparison grids.

Library use::

    cfg = load_config(DistillConfig, overrides=["steps=500"])
    Distiller(cfg).run("runs/digits")
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .config import DistillConfig, save_config
from .data import read_prompts_file
from .grids import grid_image, panels, save_png
from .metrics_log import MetricsLog
from .models.bundle import BUILTIN, Bundle, ModelMeta, builtin_prompts_path, load_bundle, save_bundle
from .models.student import Student
from .models.teacher import Teacher
from .objectives.scm import scm_loss, tangent_ratio
from .outputs import check_output_dir, staged_output_dir
from .pairs.trajectory import TrajectoryPairSource
from .previews import student_samples, teacher_samples


def load_prompts(spec: str) -> list[str]:
    return read_prompts_file(builtin_prompts_path() if spec == BUILTIN else spec)


class Distiller:
    """Holds teacher, student, EMA, optimiser and the pair source; ``run(out)`` trains and saves.

    Everything that can fail on bad input (teacher folder, prompts, config values) fails in the
    constructor, before anything is written.
    """

    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.teacher_bundle = load_bundle(cfg.teacher, expect_kind="teacher")
        meta = self.teacher_bundle.meta
        self.teacher = Teacher.from_bundle(self.teacher_bundle)
        self.encoder = self.teacher.encoder
        self.prompts = load_prompts(cfg.prompts)
        self.conds = self.encoder.encode(self.prompts)  # cached once: [num_prompts, L, D]
        self.grid_prompts = list(cfg.sample.prompts) or self.prompts[:10]
        self.encoder.encode(self.grid_prompts)  # fail now, not after training, on a bad grid prompt
        self.image_shape = (meta.channels, meta.image_size, meta.image_size)
        self.sigma_d = meta.sigma_d

        student_net = self.teacher_bundle.network.with_guidance_embed()
        self.student = Student(student_net, meta.sigma_d, meta.timestep_scale).train()
        self.ema = AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(cfg.optim.ema_decay))
        self.source = TrajectoryPairSource(self.teacher, self.conds, list(cfg.cfg_scales), self.image_shape,
                                           cfg.pairs, meta.blank_value, self.generator)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=o.lr, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay)
        self.step = 0
        self.skipped = 0
        self._order: list[int] = []

    # -- one step ---------------------------------------------------------------------------
    def next_prompt_ids(self) -> torch.Tensor:
        """``[prompts_per_step]`` prompt indices, walking shuffled passes over the prompts."""
        ids = []
        while len(ids) < self.cfg.prompts_per_step:
            if not self._order:
                self._order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
            ids.append(self._order.pop())
        return torch.tensor(ids)

    def lr_at(self, step: int) -> float:
        """Linear warmup over ``optim.warmup_steps``, then constant (TBCM's schedule)."""
        o = self.cfg.optim
        return o.lr * (min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0)

    def train_step(self) -> dict:
        """Sample pairs, take one optimiser step (or skip it on a non-finite gradient)."""
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        pairs = self.source.sample(self.next_prompt_ids())
        r = tangent_ratio(self.step, self.cfg.objective)
        loss, stats = scm_loss(self.student, pairs, self.sigma_d, r, self.cfg.objective)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), clip))
        if math.isfinite(grad_norm) and math.isfinite(stats["loss"]):
            self.optimizer.step()
            self.ema.update_parameters(self.student)
        else:
            self.skipped += 1  # a non-finite gradient would poison the weights: skip, count
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**stats, "grad_norm": grad_norm, "r": r, "lr": lr,
                "skipped": self.skipped, "pairs": len(pairs)}

    # -- the whole run ----------------------------------------------------------------------
    def student_for_sampling(self) -> Student:
        return self.ema.module.eval()

    def run(self, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
        """Train ``cfg.steps`` steps; write ``out/{student/, config.yaml, metrics.csv, samples*.png}``."""
        check_output_dir(out, overwrite)
        cfg = self.cfg
        with staged_output_dir(out, overwrite) as tmp:
            save_config(cfg, tmp / "config.yaml")
            log = MetricsLog(tmp / "metrics.csv", tensorboard_dir=tmp / "tensorboard")
            bar = tqdm(total=cfg.steps, desc="distill", disable=not progress, dynamic_ncols=True)
            start = time.perf_counter()
            window_pairs, window_start = 0, start
            while self.step < cfg.steps:
                stats = self.train_step()
                window_pairs += stats["pairs"]
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    pairs_per_s = window_pairs / max(now - window_start, 1e-9)
                    window_pairs, window_start = 0, now
                    log.log(self.step, {**{k: v for k, v in stats.items() if k != "pairs"},
                                        "pairs_per_s": pairs_per_s, "seconds": now - start})
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", pairs_s=f"{pairs_per_s:.0f}", r=f"{stats['r']:.2f}")
            bar.close()
            log.close()
            self.save_student(tmp / "student")
            self.save_grids(tmp)
        return Path(out)

    def save_student(self, path: Path) -> Path:
        student = self.student_for_sampling()
        tmeta = self.teacher_bundle.meta
        meta = ModelMeta(
            kind="student", sigma_d=tmeta.sigma_d, channels=tmeta.channels, image_size=tmeta.image_size,
            network=student.network.config.to_dict(), prompt_encoder=self.encoder.config(),
            timestep_scale=tmeta.timestep_scale, blank_value=tmeta.blank_value,
            extra={"teacher": str(self.cfg.teacher), "steps": self.step, "skipped_steps": self.skipped,
                   "default_cfg_scale": self.cfg.sample.cfg_scale, "shift": self.cfg.sample.shift},
        )
        return save_bundle(Bundle(meta, student.network, self.encoder, student.logvar_head), path)

    def save_grids(self, folder: Path) -> None:
        """Teacher (guided, many steps) beside the student (1, 2, 4 steps): same prompts, same seeds."""
        s, prompts = self.cfg.sample, self.grid_prompts
        rows = len(prompts)
        named = [(f"teacher {s.teacher_steps} steps",
                  grid_image(teacher_samples(self.teacher, prompts, s.cfg_scale, s.teacher_steps, s.seeds, s.shift), rows))]
        student = self.student_for_sampling()
        for n in s.student_steps:
            pixels = student_samples(student, self.encoder, prompts, s.cfg_scale, n, s.seeds, s.shift)
            named.append((f"student {n} step{'s' if n > 1 else ''}", grid_image(pixels, rows)))
        for title, im in named:
            save_png(im, folder / f"samples_{title.replace(' ', '_')}.png")
        save_png(panels(named), folder / "samples.png")
