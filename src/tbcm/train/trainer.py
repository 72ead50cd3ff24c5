"""The distillation loop: pairs from the source, the loss terms on the student in one gradient
forward, the optimiser and EMA, logging, checkpoints, and at the end the student folder and grids.

Library use::

    cfg = load_config(DistillConfig, "configs/distill_digits.yaml", ["steps=500"])
    Distiller(cfg).run("runs/digits")
    Distiller(load_config(DistillConfig, "runs/digits/config.yaml", ["steps=800"])).run("runs/digits", resume=True)

Under ``torchrun`` each process is one rank: prompts are sharded across ranks, each rank rolls out
its own trajectories with its own seed, gradients are averaged by DDP (or the student is sharded
by FSDP2), and rank 0 alone writes files.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import distributed as dist_utils
from ..checkpoint import latest_checkpoint, load_checkpoint
from ..config import DistillConfig, save_config, validate, with_absolute_paths
from ..ema import EMA
from ..errors import TrainingStopped, UserError
from ..metrics_log import MetricsLog
from ..models import lora
from ..models.loading import load_teacher_and_prompts
from ..models.student import Student
from ..objectives.registry import build_terms
from ..objectives.scm import tangent_ratio
from ..objectives.terms import StepBatch, TermContext
from ..outputs import check_output_dir
from ..pairs.base import Pairs
from ..pairs.build import keep_trajectory_ends, make_pair_source, rank_seed
from . import outputs
from .optim import lr_at, make_optimizer
from .start_check import check_start
from .state import load_trainer_state, save_trainer_checkpoint, trainer_state


class Distiller:
    """Holds teacher, student, EMA, optimiser, the pair source and the loss terms; ``run(out)``
    trains and saves. Everything that can fail on bad input (teacher folder, prompts, config
    values, cache) fails in the constructor, before anything is written.
    """

    def __init__(self, cfg: DistillConfig, dist: dist_utils.DistInfo | None = None):
        validate(cfg)  # load_config did; a config built in code is checked here
        self.cfg = cfg
        self.dist = dist if dist is not None else dist_utils.init_distributed(cfg.device)
        self.device = self.dist.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        # prompt encodings are cached once: conds is [num_prompts, L, D]
        self.notes: list[str] = []  # shown when the run starts (tbcm.models.guidance's account)
        self.teacher_bundle, self.teacher, self.prompts, conds = load_teacher_and_prompts(cfg, self.dist, self.notes)
        meta = self.teacher_bundle.meta
        self.encoder = self.teacher.encoder
        self.grid_prompts = list(cfg.preview.prompts) or self.prompts[:10]
        self.sampler = outputs.student_sampler(cfg)  # saved with the student; sampler.tune may replace it
        self.encoder.encode(self.grid_prompts)  # fail now, not after training, on a bad grid prompt
        if hasattr(self.encoder, "free_text_encoders") and hasattr(conds, "cache_dir"):
            # every prompt of the run (training, null, grids) is cached: Gemma-2 / T5 can go
            self.encoder.free_text_encoders()
        self.image_shape = (meta.channels, meta.image_size, meta.image_size)
        self.sigma_d = meta.sigma_d
        # the network only: prompts are encoded already, and a text encoder would hold GPU memory for nothing
        self.teacher.F.to(self.device)
        self.conds = conds.to(self.device)
        self.source = make_pair_source(cfg, self.teacher, self.conds, self.encoder, meta, self.image_shape,
                                       self.device, self.dist.rank, self.dist.world_size)

        # the teacher's network with a guidance input: trained whole, or frozen and shared with the
        # teacher under LoRA adapters (student.lora_rank)
        student_net = lora.student_network(self.teacher_bundle.network, cfg.student)
        # a CPU copy of the starting network (a LoRA base stays shared): the EMA student is loaded
        # into copies of it at the end (cheaper than rebuilding it, and the live student may be
        # sharded); terms copy it too
        self.student_template = lora.copy_network(student_net, "cpu")
        student_net.gradient_checkpointing = cfg.grad_checkpointing
        self.student = Student(student_net, meta.sigma_d, meta.timestep_scale).to(self.device).train()
        self.model = self._wrap_parallel(self.student)  # the gradient path; the JVP uses self.student
        # after wrapping: under FSDP2 the EMA holds the same (sharded) parameter layout
        self.ema = EMA(self.student, cfg.optim.ema_decay)
        self.optimizer = make_optimizer(lora.trainable(self.model), cfg.optim)
        ctx = TermContext(cfg, self.teacher, self.student, self.student_template, self.conds, self.image_shape,
                          self.sigma_d, meta.timestep_scale, self.dist, self.device, rank_seed(cfg.seed, self.dist.rank))
        self.terms = build_terms(ctx)
        for term in self.terms:
            if term.needs_trajectory_end:
                keep_trajectory_ends(self.source, f"objective.{term.name}.weight", cfg.source)
        self.step = 0
        self.start_err = float("nan")  # set by check_start() when a new run starts
        self.skipped = 0
        self.consecutive_skips = 0
        self.peak_mem_mb = 0.0

    def _wrap_parallel(self, student: Student) -> torch.nn.Module:
        if not self.dist.enabled:
            return student
        if self.cfg.parallel == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            # frozen weights (a LoRA base: the teacher's, held once) stay whole and unsharded
            frozen = {p for p in student.parameters() if not p.requires_grad} or None
            for block in student.network.blocks:
                fully_shard(block, ignored_params=frozen)
            return fully_shard(student, ignored_params=frozen)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(student, device_ids=ids)

    def term(self, name: str):
        """The loss term ``name`` of this run, or ``None`` when it is off."""
        return next((t for t in self.terms if t.name == name), None)

    # -- one step ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return lr_at(step, self.cfg.optim, self.cfg.steps)

    def _gradient_forward(self, pairs: Pairs, extras: list, bf16: bool):
        """One student forward with gradients on the pairs and every term's extra inputs:
        ``(F [B,...], logvar [B], [each term's extra F or None])``, F in fp32."""
        x_norm, t, cond, w = pairs.x_t / self.sigma_d, pairs.t.to(pairs.x_t.dtype), pairs.cond, pairs.w
        riding = [e for e in extras if e is not None]
        if riding:
            x_norm = torch.cat([x_norm, *(e[0] for e in riding)])
            t = torch.cat([t, *(e[1].to(t.dtype) for e in riding)])
            cond = type(cond).cat([cond, *(e[2] for e in riding)])
            w = torch.cat([w, *(e[3] for e in riding)])
        with torch.autocast(device_type=pairs.x_t.device.type, dtype=torch.bfloat16, enabled=bf16):
            F, logvar = self.model(x_norm, t, cond, w, with_logvar=True)
        F = F.to(pairs.x_t.dtype)
        n, rows, offset = len(pairs), [], len(pairs)
        for e in extras:
            rows.append(None if e is None else F[offset:offset + e[0].shape[0]])
            offset += 0 if e is None else e[0].shape[0]
        return F[:n], logvar[:n], rows

    def train_step(self, pairs: Pairs | None = None) -> dict:
        """One optimiser step on ``pairs`` (default: the source's next batch for this rank).

        A step whose gradient norm is not finite is skipped (no update, no EMA) and counted; the
        decision is the same on every rank because the norm is taken after the gradient sync.
        """
        if pairs is None:
            pairs = self.source.next_pairs(self.cfg.prompts_per_step)
        pairs = pairs.to(self.device)
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        r = tangent_ratio(self.step, self.cfg.objective)
        denominator = None
        if self.dist.enabled:  # global mean over kept pairs, whatever each rank kept
            # on the training device: NCCL reduces CUDA tensors only, and a host copy would be a sync
            kept = dist_utils.all_reduce_sum(pairs.mask.sum().reshape(()).float(), self.dist)
            denominator = kept / self.dist.world_size
        batch = StepBatch(pairs, self.step, r, denominator, self.cfg.precision == "bf16")
        extras = [term.prepare(batch) for term in self.terms]
        F, logvar, extra_F = self._gradient_forward(pairs, extras, batch.bf16)
        loss, logged, stats = None, None, {}
        for term, rows in zip(self.terms, extra_F):
            term_loss, term_stats = term.loss(batch, F, logvar, rows)
            stats.update(term_stats)
            if term_loss is None:
                continue
            weighted = term.weight * term_loss
            loss = weighted if loss is None else loss + weighted
            if term.in_loss_stat:
                logged = weighted if logged is None else logged + weighted
        stats = {"loss": logged.detach(), **stats}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for term in self.terms:  # a term's own parameters step; the student's gradients stay as they are
            stats.update(term.after_backward())
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(norm, "full_tensor"):  # FSDP2: a replicated DTensor
            norm = norm.full_tensor()
        values = torch.stack([v.float() for v in stats.values()])
        if self.dist.enabled:  # the global mean over ranks, not rank 0's share (one small all-reduce)
            values = dist_utils.all_reduce_sum(values, self.dist) / self.dist.world_size
        # the one device-to-host copy of the step: the skip decision needs the norm on the host
        *values, grad_norm = torch.cat([values, norm.float().reshape(1)]).tolist()
        stats = dict(zip(stats, values))
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.ema.update(self.student)
            self.consecutive_skips = 0
        else:
            self.skipped += 1  # a non-finite gradient would poison the weights: skip, count
            self.consecutive_skips += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**stats, "grad_norm": grad_norm, "r": r, "lr": lr, "skipped": self.skipped, "pairs": len(pairs),
                "teacher_calls": getattr(self.source, "teacher_calls", 0), "pool_mb": getattr(self.source, "pool_mb", 0.0)}

    # -- state, start check, outputs (each in its own module) ----------------------------------
    def state_dict(self) -> dict:
        return trainer_state(self)

    def load_state_dict(self, state: dict) -> None:
        load_trainer_state(self, state)

    def save_checkpoint(self, folder: Path) -> Path | None:
        return save_trainer_checkpoint(self, folder)

    def check_start(self) -> float:
        return check_start(self)

    def student_for_sampling(self) -> Student:
        return outputs.student_for_sampling(self)

    # -- the whole run ----------------------------------------------------------------------
    def run(self, out: str | Path, overwrite: bool = False, progress: bool = True, resume: bool = False) -> Path:
        """Train to ``cfg.steps``; write ``out/{config.yaml, metrics.csv, checkpoints/, student/, samples*.png}``.

        A new run needs an empty or missing ``out`` (``overwrite`` clears it first); ``resume``
        continues from the latest checkpoint in ``out/checkpoints``.  Files appear as they are
        written: a killed run keeps its checkpoints and can be resumed.
        """
        cfg, out, main = self.cfg, Path(out), self.dist.is_main
        if resume:
            ckpt = latest_checkpoint(out / "checkpoints")
            if ckpt is None:
                raise UserError(f"no checkpoint in {out / 'checkpoints'} to resume from: start a new run instead")
            self.load_state_dict(load_checkpoint(ckpt))
        else:
            check_output_dir(out, overwrite)
            self.start_err = self.check_start()  # before anything is written or cleared
            dist_utils.barrier(self.dist)  # every rank checked before rank 0 clears anything
            if main and out.exists():
                shutil.rmtree(out)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(with_absolute_paths(cfg), out / "config.yaml")  # rerunnable from anywhere
            for note in self.notes:  # every input check passed: a refused run stays one line
                print(note, file=sys.stderr)
        log = MetricsLog(out / "metrics.csv", tensorboard_dir=out / "tensorboard", resume_from=self.step) if main else None
        bar = tqdm(total=cfg.steps, initial=self.step, desc="distill", disable=not (progress and main), dynamic_ncols=True)
        start = time.perf_counter()
        window_pairs, window_start = 0, start
        try:
            while self.step < cfg.steps:
                stats = self.train_step()
                window_pairs += stats["pairs"] * self.dist.world_size
                bar.update(1)
                if self.consecutive_skips >= cfg.max_consecutive_skips:
                    good = latest_checkpoint(out / "checkpoints")
                    raise TrainingStopped(
                        f"{self.consecutive_skips} non-finite steps in a row at step {self.step}: stopped; last good "
                        f"checkpoint: {good or 'none yet'}; lower optim.lr or raise objective.tangent_norm_c")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    pairs_per_s = window_pairs / max(now - window_start, 1e-9)
                    window_pairs, window_start = 0, now
                    if log is not None:
                        log.log(self.step, {**{k: v for k, v in stats.items() if k != "pairs"},
                                            "start_error": self.start_err, "pairs_per_s": pairs_per_s,
                                            "seconds": now - start, "peak_mem_mb": outputs.peak_memory_mb(self.device)})
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", pairs_s=f"{pairs_per_s:.0f}", r=f"{stats['r']:.2f}")
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint(out)
                if cfg.preview.every and self.step % cfg.preview.every == 0 and self.step < cfg.steps:
                    outputs.save_progress_grid(self, out, log)
        finally:
            bar.close()
            if log is not None:
                log.close()
        self.save_checkpoint(out)
        self.peak_mem_mb = outputs.peak_memory_mb(self.device)
        final = self.student_for_sampling()  # every rank: gathering shards is collective
        if main:
            outputs.save_student(self, final, out / "student")
            if cfg.sampler.tune:  # before the grids, so they show the sampler the student is saved with
                self.sampler = outputs.tune_student_sampler(self, final, out, progress)
            outputs.save_grids(self, final, out)
        dist_utils.barrier(self.dist)
        return out
