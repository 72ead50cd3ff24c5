"""``tbcm teacher train``: train the built-in kind of teacher (TinyDiT + prompt encoder) by
flow matching on images with prompts.  The embedded default teacher was made with this module
(``configs/teacher_digits.yaml``: the train split of the digits, never an FID reference image); it
also takes a user's own folder or .npz of images.  The teacher's ``model.yaml`` records what it
trained on (``extra``: ``trained_on``, ``images``, ``steps`` and, for a split source, ``split``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as Fn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .config import TeacherTrainConfig, save_config
from .data import load_training_data
from .errors import UserError
from .grids import grid_image, save_png
from .metrics_log import MetricsLog
from .models.bundle import Bundle, ModelMeta, write_bundle_files
from .models.builtin.dit import TinyDiT
from .models.teacher import Teacher
from .models.builtin.text import PromptEncoder, tokenize_words
from .outputs import staged_output_dir
from .previews import teacher_samples


def build_vocab(prompts: list[str]) -> list[str]:
    return sorted({w for p in prompts for w in tokenize_words(p)})


class _Joint(torch.nn.Module):
    """Network and encoder as one module, so one EMA and one optimiser cover both."""

    def __init__(self, network: TinyDiT, encoder: PromptEncoder):
        super().__init__()
        self.network, self.encoder = network, encoder


def flow_matching_loss(joint: _Joint, x0: torch.Tensor, ids, mask, generator=None) -> torch.Tensor:
    """Rectified-flow loss: ``x_tau = (1 - tau) x0 + tau n``, target ``v = n - x0``.

    ``tau`` is logit-normal (``sigmoid(N(0, 1))``), as in SD3 / Sana.  ``x0`` ``[B, C, H, W]``.
    """
    b = x0.shape[0]
    tau = torch.sigmoid(torch.randn(b, generator=generator))
    n = torch.randn(x0.shape, generator=generator)
    tb = tau[:, None, None, None]
    x_tau = (1 - tb) * x0 + tb * n
    v = joint.network(x_tau, tau * 1000, joint.encoder(ids, mask))
    return Fn.mse_loss(v, n - x0)


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Train a teacher and write it (a model folder plus config, metrics and samples) to ``out``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_training_data(cfg.data, cfg.image_size, cfg.prompt_template, cfg.generated_images, cfg.seed)
    vocab = build_vocab(data.prompts)
    longest = max(len(tokenize_words(p)) for p in data.prompts)
    if longest > cfg.model.max_words:
        raise UserError(f"a training prompt has {longest} words, more than model.max_words="
                        f"{cfg.model.max_words}: raise model.max_words")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    channels = data.images.shape[1]
    encoder = PromptEncoder(vocab, dim=cfg.model.text_dim, max_words=cfg.model.max_words)
    joint = _Joint(TinyDiT(cfg.dit_config(channels)), encoder)
    ids, mask = encoder.token_ids(data.prompts)
    ema = AveragedModel(joint, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    opt = torch.optim.AdamW(joint.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = min(200, cfg.steps // 10)
    # Warmup, then cosine decay to 10%: the teacher only has to be good at the end.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))))

    with staged_output_dir(out, overwrite) as tmp:
        save_config(cfg, tmp / "train_config.yaml")
        log = MetricsLog(tmp / "metrics.csv")
        n = data.images.shape[0]
        bar = tqdm(range(1, cfg.steps + 1), desc="teacher", disable=not progress, dynamic_ncols=True)
        start, running = time.perf_counter(), None
        for step in bar:
            idx = torch.randint(n, (cfg.batch_size,), generator=gen)
            keep = (torch.rand(cfg.batch_size, generator=gen) >= cfg.cond_dropout).float()
            loss = flow_matching_loss(joint, data.images[idx], ids[idx], mask[idx] * keep[:, None], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(joint.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.update_parameters(joint)
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            if step % 50 == 0 or step == cfg.steps:
                bar.set_postfix(loss=f"{running:.4f}")
                log.log(step, {"loss": running, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - start})
        log.close()

        final = ema.module
        extra = {"trained_on": cfg.data, "images": n, "steps": cfg.steps}
        if data.split is not None:  # which part of a split source it saw (digits: never an FID reference image)
            extra["split"] = data.split
        meta = ModelMeta(kind="teacher", sigma_d=cfg.sigma_d, channels=channels, image_size=cfg.image_size,
                         network=final.network.config.to_dict(), prompt_encoder=final.encoder.config(),
                         extra=extra, guidance=cfg.sample_cfg_scale)  # what a distillation trains around
        write_bundle_files(Bundle(meta, final.network, final.encoder), tmp)  # `out` is the teacher folder
        teacher = Teacher(final.network.eval(), final.encoder.eval(), cfg.sigma_d)
        distinct = sorted(set(data.prompts))
        prompts = distinct[:: max(1, len(distinct) // 10)][:10]  # ten spread over the prompt set
        pixels = teacher_samples(teacher, prompts, cfg.sample_cfg_scale, cfg.sample_steps, seeds=8)
        save_png(grid_image(pixels, rows=len(prompts)), tmp / "samples.png")
    return Path(out)
