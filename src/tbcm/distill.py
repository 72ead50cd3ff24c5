"""The distillation loop: pairs from the source, the sCM step on the student, EMA, logging,
checkpoints, and at the end the student folder and the comparison grids.

Library use::

    cfg = load_config(DistillConfig, overrides=["steps=500"])
    Distiller(cfg).run("runs/digits")
    Distiller(load_config(DistillConfig, "runs/digits/config.yaml", ["steps=800"])).run("runs/digits", resume=True)

Under ``torchrun`` each process is one rank: prompts are sharded across ranks, each rank rolls out
its own trajectories with its own seed, gradients are averaged by DDP (or the student is sharded
by FSDP2), and rank 0 alone writes files.
"""

from __future__ import annotations

import copy
import math
import resource
import shutil
import time
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from tqdm import tqdm

from . import distributed as dist_utils
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import DistillConfig, save_config, validate, with_absolute_paths
from .data import read_prompts_file
from .ema import EMA
from .errors import TrainingStopped, UserError
from .grids import grid_image, panels, save_png
from .metrics_log import MetricsLog
from .models.bundle import BUILTIN, Bundle, ModelMeta, builtin_prompts_path, is_builtin, load_bundle, save_bundle
from .models.registry import get_family
from .models.student import Student
from .models.teacher import Teacher
from .models.text_cache import DiskCachedEncoder
from .objectives.scm import scm_loss, tangent_ratio
from .trigflow import consistency_fn, forward_noise
from .outputs import check_output_dir
from .pairs.base import Pairs
from .pairs.prompts import PromptSampler
from .pairs.rollout_teacher import rollout_teacher
from .pairs.trajectory import TrajectoryPairSource
from .previews import student_samples, teacher_samples
from .sampling import routes_by_steps


def load_prompts(spec: str) -> list[str]:
    return read_prompts_file(builtin_prompts_path(spec) if is_builtin(spec) else spec)


def load_teacher_and_prompts(cfg: DistillConfig, dist: dist_utils.DistInfo | None = None):
    """The teacher folder, the frozen guided teacher, the prompts and their encodings.

    The built-in encoder encodes everything in memory (it is tiny). A diffusers encoder with a
    disk cache streams: each rank encodes its share of the prompts not cached yet (on the
    accelerator when there is one) straight into the cache, and the run reads each step's rows
    from there (:class:`~tbcm.models.text_cache.CachedConditions`), so memory does not grow with
    the number of prompts. Raises :class:`UserError` for a bad teacher folder, prompts file or prompt.
    """
    bundle = load_bundle(cfg.teacher, expect_kind="teacher", **teacher_options(cfg))
    check_family_supports(cfg, bundle.meta.family)
    prompts = load_prompts(cfg.prompts)
    teacher = Teacher.from_bundle(bundle)
    teacher.guidance_interval = tuple(float(a) for a in cfg.guidance_interval) or None
    encoder = teacher.encoder
    if not isinstance(encoder, DiskCachedEncoder) or encoder.cache_dir is None:  # all encodings in memory
        return bundle, teacher, prompts, encoder.encode(prompts, progress=True)
    dist = dist if dist is not None else dist_utils.DistInfo()
    if dist.device.type == "cuda":
        encoder.move_text_encoders(dist.device)
    encoder.fill_cache(prompts, dist.rank, dist.world_size, progress=dist.is_main)
    encoder.move_text_encoders("cpu")
    dist_utils.barrier(dist)  # every rank's share is on disk before any rank reads another's
    return bundle, teacher, prompts, encoder.cached_conditions(prompts)


def check_family_supports(cfg: DistillConfig, family: str) -> None:
    """What latent (diffusers) teachers cannot do yet, refused before any prompt is encoded."""
    fam = get_family(family)
    if not fam.pixel_space and cfg.source == "forward":
        raise UserError(f"source=forward trains on real images encoded by the VAE, which tbcm does not do for "
                        f"{family} teachers: use source=trajectory (TBCM needs no images) or teacher_x0")
    if not fam.pixel_space and fam.blank_latent is None and cfg.pairs.blank_threshold > 0:
        raise UserError(f"pairs.blank_threshold needs the latent of a blank image, unknown for {family} teachers: "
                        "set pairs.blank_threshold=0")


def blank_reference(cfg: DistillConfig, meta: ModelMeta, image_shape: tuple[int, int, int]):
    """What the degenerate filter compares final samples with, in flow space: a pixel family's
    blank pixel value, or a latent teacher's VAE encoding of a black image."""
    blank_latent = get_family(meta.family).blank_latent
    if blank_latent is not None and cfg.pairs.blank_threshold > 0:
        return blank_latent(meta, image_shape)
    return meta.blank_value


def teacher_options(cfg: DistillConfig) -> dict:
    """How to load a diffusers teacher (ignored by tbcm teacher folders)."""
    return {"dtype": cfg.teacher_dtype, "text_cache": None if cfg.text_cache == "none" else cfg.text_cache,
            "time_multiplier": cfg.teacher_time_multiplier or None}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's max RSS (Linux: KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_optimizer(params, o) -> torch.optim.Optimizer:
    """AdamW (torch) or CAME (pytorch-optimizer, hustvl/TBCM's choice) from ``optim.*``. CAME
    factors its second moments over a tensor's last two dimensions: smaller than Adam's state for
    linear layers, larger for 1x1 convolutions (1.44x AdamW on Sana, docs/results.md)."""
    if o.name == "came":
        from pytorch_optimizer import CAME

        return CAME(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                    eps1=o.came_eps[0], eps2=o.came_eps[1])
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's pair generator (noise, routes, CFG scales): distinct per rank."""
    return seed + 1_000_003 * (rank + 1)


def _without_prompt_order(state: dict) -> dict:
    """A source state without its prompt sampler's state (at any nesting: pools wrap sources)."""
    return {k: (_without_prompt_order(v) if isinstance(v, dict) and k != "prompts" else v)
            for k, v in state.items() if k != "prompts"}


def _with_prompt_order(state: dict, reference: dict) -> dict:
    """``state`` with the prompt sampler state of ``reference`` (rank 0's) put back where it was."""
    out = dict(state)
    for k, v in reference.items():
        if k == "prompts":
            out[k] = v
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _with_prompt_order(out[k], v)
    return out


FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


class Distiller:
    """Holds teacher, student, EMA, optimiser and the pair source; ``run(out)`` trains and saves.

    Everything that can fail on bad input (teacher folder, prompts, config values, cache) fails in
    the constructor, before anything is written.
    """

    def __init__(self, cfg: DistillConfig, dist: dist_utils.DistInfo | None = None):
        validate(cfg)  # load_config did; a config built in code is checked (and its defaults resolved) here
        self.cfg = cfg
        self.dist = dist if dist is not None else dist_utils.init_distributed(cfg.device)
        self.device = self.dist.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        # prompt encodings are cached once: conds is [num_prompts, L, D]
        self.teacher_bundle, self.teacher, self.prompts, self.conds = load_teacher_and_prompts(cfg, self.dist)
        meta = self.teacher_bundle.meta
        self.encoder = self.teacher.encoder
        self.grid_prompts = list(cfg.sample.prompts) or self.prompts[:10]
        self.encoder.encode(self.grid_prompts)  # fail now, not after training, on a bad grid prompt
        if hasattr(self.encoder, "free_text_encoders") and hasattr(self.conds, "cache_dir"):
            # every prompt of the run (training, null, grids) is cached: Gemma-2 / T5 can go
            self.encoder.free_text_encoders()
        self.image_shape = (meta.channels, meta.image_size, meta.image_size)
        self.sigma_d = meta.sigma_d
        # the network only: prompts are encoded already, and a text encoder (Gemma-2, T5) would hold
        # gigabytes of GPU memory for nothing
        self.teacher.F.to(self.device)
        self.conds = self.conds.to(self.device)
        self.source = self._make_source()

        student_net = self.teacher_bundle.network.with_guidance_embed().float()
        # A fresh CPU copy to load EMA weights into at the end (cheaper than rebuilding it, and the
        # live student may be sharded).
        self._student_template = copy.deepcopy(student_net).cpu()
        student_net.gradient_checkpointing = cfg.grad_checkpointing
        self.student = Student(student_net, meta.sigma_d, meta.timestep_scale).to(self.device).train()
        self.model = self._wrap_parallel(self.student)  # the gradient path; the JVP uses self.student
        # After wrapping: under FSDP2 the EMA holds the same (sharded) parameter layout.
        self.ema = EMA(self.student, cfg.optim.ema_decay)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        if cfg.objective.endpoint_weight > 0:
            self._keep_trajectory_ends("objective.endpoint_weight")
        self.adversarial = self._make_adversarial()
        self.dmd = self._make_distribution_matching()
        self.step = 0
        self.start_err = float("nan")  # set by check_start() when a new run starts
        self.skipped = 0
        self.consecutive_skips = 0
        self.peak_mem_mb = 0.0

    def _make_source(self):
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        if cfg.source == "cache":
            from .pairs.cache import CachePairSource

            return CachePairSource(cfg.cache.dir, self.conds, seed=cfg.seed, rank=rank, world_size=world)
        generator = torch.Generator().manual_seed(rank_seed(cfg.seed, rank))
        if cfg.source in ("forward", "teacher_x0"):
            return self._make_forward_source(generator)
        sampler = PromptSampler(len(self.prompts), seed=cfg.seed, rank=rank, world_size=world)
        blank = blank_reference(cfg, self.teacher_bundle.meta, self.image_shape)
        teacher = rollout_teacher(self.teacher, cfg.pairs.rollout_dtype, cfg.pairs.rollout_compile)
        source = TrajectoryPairSource(teacher, self.conds, list(cfg.cfg_scales), self.image_shape, cfg.pairs,
                                      blank, generator, sampler)
        if cfg.pairs.pool_prompts > 0:  # online rollouts only: cache and forward sources have no pool
            from .pairs.pool import TrajectoryPool

            pool_generator = torch.Generator().manual_seed(rank_seed(cfg.seed, rank) + 7)
            return TrajectoryPool(source, cfg.pairs.pool_prompts, cfg.pairs.pool_reuse, pool_generator)
        return source

    def _keep_trajectory_ends(self, setting: str) -> None:
        """Make the pair source attach each pair's trajectory end (``Pairs.x0``): the target of the
        endpoint term and the real side of the adversarial term, named by ``setting`` in the error."""
        inner = getattr(self.source, "inner", self.source)
        if not hasattr(inner, "keep_final"):
            raise UserError(f"{setting} needs each pair's trajectory end (the teacher's own final sample), "
                            f"source={self.cfg.source} has none: use source=trajectory (or set {setting}=0)")
        inner.keep_final = True

    def _make_adversarial(self) -> dict | None:
        """The discriminator heads on the frozen teacher, their optimiser and generator (or None)."""
        a = self.cfg.objective.adversarial
        if a.weight <= 0:
            return None
        from .objectives.adversarial import TeacherDiscriminator

        self._keep_trajectory_ends("objective.adversarial.weight")
        probe = (torch.zeros(1, *self.image_shape, device=self.device), torch.ones(1, device=self.device),
                 self.conds.index(torch.zeros(1, dtype=torch.long, device=self.device)))
        try:
            disc = TeacherDiscriminator(self.teacher.F, list(a.blocks), probe).to(self.device)
        except (ValueError, IndexError) as exc:
            raise UserError(f"objective.adversarial.blocks={list(a.blocks)}: {exc}") from None
        opt = torch.optim.AdamW(disc.parameters(), lr=a.lr, betas=tuple(a.betas), weight_decay=0.0)
        gen = torch.Generator().manual_seed(rank_seed(self.cfg.seed, self.dist.rank) + 11)
        return {"disc": disc, "optimizer": opt, "generator": gen}

    def _make_distribution_matching(self) -> dict | None:
        """The fake-score network (the student's architecture, starting as the teacher), its
        optimiser and generator (or None)."""
        m = self.cfg.objective.distribution_matching
        if m.weight <= 0:
            return None
        meta = self.teacher_bundle.meta
        # A Student module for its (x_norm, t, cond, w) call; only its F network trains.
        fake = Student(copy.deepcopy(self._student_template), meta.sigma_d, meta.timestep_scale).to(self.device)
        opt = torch.optim.AdamW(fake.F.parameters(), lr=m.lr, betas=tuple(m.betas), weight_decay=0.0)
        gen = torch.Generator().manual_seed(rank_seed(self.cfg.seed, self.dist.rank) + 13)
        return {"fake": fake.train(), "optimizer": opt, "generator": gen}

    def _fake_sample_inputs(self, pairs: Pairs, samples: int, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
        """``((noise [K,C,H,W], t = pi/2 [K], cond, w [K]), idx [K])``: inputs of the student's 1-step
        samples with the prompt and guidance of ``samples`` spread pairs (ridden along the sCM
        gradient forward), and which pairs they are."""
        from .objectives.adversarial import pick

        idx = pick(len(pairs), samples).to(self.device)
        noise = torch.randn((idx.numel(), *self.image_shape), generator=gen).to(self.device)
        t = torch.full((idx.numel(),), math.pi / 2, device=self.device)
        return (noise, t, pairs.cond.index(idx), pairs.w[idx]), idx

    def _average_over_ranks(self, params) -> None:
        """Average the gradients of replicated (not DDP-wrapped) parameters over ranks, in one call."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = dist_utils.all_reduce_sum(torch.cat([g.flatten() for g in grads]), self.dist)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g) / self.dist.world_size)
            offset += g.numel()

    def _distribution_matching_step(self, fake: torch.Tensor, cond, w: torch.Tensor) -> tuple[torch.Tensor, callable]:
        """``(generator loss, critic_step)`` for the student's 1-step samples ``fake`` ``[K,C,H,W]``
        (with gradients): the DMD direction from the guided teacher and the fake score at a
        re-noised angle; ``critic_step()`` then trains the fake score on the detached samples."""
        from .objectives.adversarial import renoise_angles
        from .objectives.distribution_matching import dmd_direction, dmd_generator_loss, fake_score_target

        m, sd, dm = self.cfg.objective.distribution_matching, self.sigma_d, self.dmd
        net, gen, x0 = dm["fake"], dm["generator"], fake.detach()

        def noised():
            s = renoise_angles(x0.shape[0], m, gen).to(self.device)
            eps = torch.randn(x0.shape, generator=gen).to(self.device)
            return s, eps, forward_noise(x0, s, sd * eps)

        s, eps, x_s = noised()
        # one fake-score forward (with grad) serves the direction (detached) and the first critic update
        F_fake = net(x_s / sd, s, cond, w)
        x0_real = consistency_fn(x_s, s, self.teacher.velocity(x_s, s, cond, w) / sd, sd)
        x0_fake = consistency_fn(x_s, s, F_fake.detach(), sd)
        g_loss = dmd_generator_loss(fake, dmd_direction(x0, x0_real, x0_fake))

        def critic_step() -> torch.Tensor:
            total = torch.zeros((), device=self.device)
            for i in range(m.critic_steps):
                if i == 0:
                    F_i, s_i, eps_i = F_fake, s, eps
                else:
                    s_i, eps_i, x_i = noised()
                    F_i = net(x_i / sd, s_i, cond, w)
                dm["optimizer"].zero_grad(set_to_none=True)
                loss = ((F_i - fake_score_target(x0, eps_i, s_i, sd)) ** 2).mean()
                loss.backward()
                self._average_over_ranks(net.F.parameters())
                dm["optimizer"].step()
                total = total + loss.detach()
            return total / m.critic_steps

        return g_loss, critic_step

    def _adversarial_inputs(self, pairs: Pairs):
        """``(fake-sample inputs, real x0)``: pure noise at pi/2 with the prompt and guidance of
        spread pairs (ridden along the sCM gradient forward), and those pairs' trajectory ends."""
        inputs, idx = self._fake_sample_inputs(pairs, self.cfg.objective.adversarial.samples,
                                               self.adversarial["generator"])
        return inputs, pairs.x0[idx]

    def _adversarial_step(self, fake: torch.Tensor, real: torch.Tensor, cond) -> tuple[torch.Tensor, callable]:
        """``(generator loss, d_step)``: ``d_step()`` updates the heads on the fake's features,
        detached (no second teacher forward on the fakes), and the real's (taken without grad)."""
        from .objectives.adversarial import hinge_d_loss, renoise, renoise_angles

        a, adv, sd = self.cfg.objective.adversarial, self.adversarial, self.sigma_d
        disc, gen = adv["disc"], adv["generator"]
        s = renoise_angles(fake.shape[0], a, gen).to(self.device)
        eps = torch.randn(fake.shape, generator=gen).to(self.device)  # the same noise for real and fake
        fake_feats = disc.features(renoise(fake, s, eps, sd) / sd, s, cond)
        g_loss = -disc.logits(fake_feats).mean()

        def d_step() -> torch.Tensor:
            adv["optimizer"].zero_grad(set_to_none=True)  # drop what the generator loss left on the heads
            with torch.no_grad():
                real_feats = disc.features(renoise(real, s, eps, sd) / sd, s, cond)
            d_loss = hinge_d_loss(disc.logits(real_feats), disc.logits([f.detach() for f in fake_feats]))
            d_loss.backward()
            self._average_over_ranks(disc.parameters())  # replicated heads
            adv["optimizer"].step()
            return d_loss.detach()

        return g_loss, d_step

    def _make_forward_source(self, generator: torch.Generator):
        """The baselines: real images (``forward``) or a pool of teacher samples (``teacher_x0``),
        forward-noised, with one guided teacher call per pair."""
        from .data import load_training_data
        from .pairs.forward import ForwardNoisePairSource, teacher_pool

        cfg, sd = self.cfg, self.sigma_d
        pairs_per_prompt = cfg.pairs.route_points - 1  # same pairs per step as the trajectory source
        if cfg.source == "forward":
            data = load_training_data(cfg.forward.data, self.image_shape[-1], cfg.forward.prompt_template)
            if tuple(data.images.shape[1:]) != self.image_shape:
                raise UserError(f"forward.data images are {tuple(data.images.shape[1:])}, the teacher makes "
                                f"{self.image_shape}: use data of the teacher's shape")
            unique = sorted(set(data.prompts))
            which = torch.tensor([unique.index(p) for p in data.prompts])
            conds = self.encoder.encode(unique).to(self.device).index(which.to(self.device))  # one per image
            source = ForwardNoisePairSource(self.teacher, sd * data.images, conds, list(cfg.cfg_scales),
                                            pairs_per_prompt, cfg.forward, generator)
        else:
            x0, conds, calls = teacher_pool(self.teacher, self.conds, list(cfg.cfg_scales), self.image_shape,
                                            cfg.forward, seed=cfg.seed + 17 * (self.dist.rank + 1))
            source = ForwardNoisePairSource(self.teacher, x0, conds, list(cfg.cfg_scales), pairs_per_prompt,
                                            cfg.forward, generator)
            source.teacher_calls = calls  # the pool is part of this source's teacher budget
        return source

    def _wrap_parallel(self, student: Student) -> torch.nn.Module:
        if not self.dist.enabled:
            return student
        if self.cfg.parallel == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for block in student.network.blocks:
                fully_shard(block)
            return fully_shard(student)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(student, device_ids=ids)

    # -- one step ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based): linear warmup over
        ``optim.warmup_steps``, then constant (TBCM's schedule) or a cosine from ``lr`` at the end of
        the warmup to ``decay_to * lr`` at the last step (``steps - 1``)."""
        o = self.cfg.optim
        if o.warmup_steps and step + 1 < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        if o.decay == "constant":
            return o.lr
        start, end = max(o.warmup_steps - 1, 0), self.cfg.steps - 1
        progress = min(1.0, max(0.0, (step - start) / (end - start))) if end > start else 1.0
        return o.lr * (o.decay_to + (1.0 - o.decay_to) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _to_device(self, pairs: Pairs) -> Pairs:
        d = self.device
        return Pairs(pairs.x_t.to(d), pairs.t.to(d), pairs.u.to(d), pairs.cond.to(d), pairs.w.to(d),
                     pairs.mask.to(d), pairs.prompt_ids, None if pairs.x0 is None else pairs.x0.to(d))

    def train_step(self, pairs: Pairs | None = None) -> dict:
        """One optimiser step on ``pairs`` (default: the source's next batch for this rank).

        A step whose gradient norm is not finite is skipped (no update, no EMA) and counted; the
        decision is the same on every rank because the norm is taken after the gradient sync.
        """
        if pairs is None:
            pairs = self.source.next_pairs(self.cfg.prompts_per_step)
        pairs = self._to_device(pairs)
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        r = tangent_ratio(self.step, self.cfg.objective)
        denominator = None
        if self.dist.enabled:  # global mean over kept pairs, whatever each rank kept
            # on the training device: NCCL reduces CUDA tensors only, and a host copy would be a sync
            kept = dist_utils.all_reduce_sum(pairs.mask.sum().reshape(()).float(), self.dist)
            denominator = kept / self.dist.world_size
        a = self.cfg.objective.adversarial
        adversarial = self.adversarial is not None and self.step >= a.start_step
        extra, extra_out, after_backward = None, [], None  # after_backward: (stat name, the term's own update)
        if adversarial:
            extra, real = self._adversarial_inputs(pairs)
        m = self.cfg.objective.distribution_matching
        if self.dmd is not None:  # the fake score follows the student from step 0; the term joins at start_step
            extra, _ = self._fake_sample_inputs(pairs, m.samples, self.dmd["generator"])
        loss, stats = scm_loss(self.model, pairs, self.sigma_d, r, self.cfg.objective, jvp_student=self.student,
                               denominator=denominator, bf16=self.cfg.precision == "bf16", extra=extra,
                               extra_out=extra_out)
        if self.adversarial is not None:
            zero = torch.zeros((), device=loss.device)
            stats["adv_g"], stats["adv_d"] = zero, zero
        if adversarial:
            from .objectives.adversarial import one_step_sample

            fake = one_step_sample(extra_out[0], extra[0], self.sigma_d)
            g_loss, d_step = self._adversarial_step(fake, real, extra[2])
            loss = loss + a.weight * g_loss
            stats["adv_g"] = g_loss.detach()
            after_backward = ("adv_d", d_step)  # the heads, on the detached fake's features
        if self.dmd is not None:
            from .objectives.adversarial import one_step_sample

            fake = one_step_sample(extra_out[0], extra[0], self.sigma_d)
            g_loss, critic_step = self._distribution_matching_step(fake, extra[2], extra[3])
            stats["dmd_g"] = g_loss.detach()
            if self.step >= m.start_step:
                loss = loss + m.weight * g_loss
            after_backward = ("dmd_fake", critic_step)  # the fake score, on the detached samples
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:  # the term's own parameters step; the student's gradients stay as they are
            stats[after_backward[0]] = after_backward[1]()
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(norm, "full_tensor"):  # FSDP2: a replicated DTensor
            norm = norm.full_tensor()
        logged = torch.stack([v.float() for v in stats.values()])
        if self.dist.enabled:  # the global mean over ranks, not rank 0's share (one small all-reduce)
            logged = dist_utils.all_reduce_sum(logged, self.dist) / self.dist.world_size
        # the one device-to-host copy of the step: the skip decision needs the norm on the host
        *values, grad_norm = torch.cat([logged, norm.float().reshape(1)]).tolist()
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

    # -- the checked start -------------------------------------------------------------------
    @torch.no_grad()
    def start_error(self) -> float:
        """Relative error ``||F_student - F_teacher|| / ||F_teacher||`` on one batch of this run's
        own pairs (states, angles, prompts, guidance inputs), before any step.

        sCM assumes the student starts as the teacher. The student's guidance embedder starts at
        zero, so what it must equal is the teacher's *conditional* F (the guided F differs by
        design whenever ``w != 1``); what this catches is a student whose time input does not
        match the teacher's (a refitted dense-time embedding, a wrong ``teacher_time_multiplier``).
        The source's position and RNG are restored afterwards: training sees the same pairs.
        Collective under DDP/FSDP2 (the largest error over ranks)."""
        # a pool's own source: one step's prompts, not a whole pool refill thrown away
        source = getattr(self.source, "inner", self.source)
        state = copy.deepcopy(source.state_dict())
        pairs = self._to_device(source.next_pairs(self.cfg.prompts_per_step))
        source.load_state_dict(state)
        x = pairs.x_t / self.sigma_d
        f_student = self.student(x, pairs.t, pairs.cond, pairs.w).float()
        f_teacher = self.teacher.F(x, pairs.t, pairs.cond).float()
        err = (f_student - f_teacher).norm() / f_teacher.norm().clamp(min=1e-12)
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(err, op=dist.ReduceOp.MAX)
        return float(err)

    def check_start(self) -> float:
        """:meth:`start_error`, refused above ``start_check_max_error`` (0 = not checked)."""
        limit = self.cfg.start_check_max_error
        if limit <= 0:
            return float("nan")
        err = self.start_error()
        if self.dist.is_main:
            tqdm.write(f"start check: the student is {err:.2e} (relative) from the teacher's conditional F "
                       f"(limit {limit:g})")
        if not err <= limit:
            raise UserError(f"the untrained student is {err:.1%} away from the teacher (limit {limit:.1%}), but sCM "
                            "assumes it starts equal: its time input does not match the teacher's -- set "
                            "teacher_time_multiplier (1 for a dense-time teacher, 0 = from its config) or use a "
                            "dense-time teacher; start_check_max_error=0 skips the check")
        return err

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything an exact resume needs (every rank's data position and RNG included)."""
        # The prompt order is the same on every rank (identically seeded): only rank 0's copy is
        # kept, the other ranks send just what differs (their generators, pools, counters).
        own = self.source.state_dict()
        sources = dist_utils.gather_objects(own if self.dist.rank == 0 else _without_prompt_order(own), self.dist)
        # Full (unsharded) tensors whatever the parallelism, so a checkpoint loads anywhere.
        model_state, optim_state = get_state_dict(self.student, self.optimizer, options=FULL_STATE)
        return {
            "step": self.step, "skipped": self.skipped, "consecutive_skips": self.consecutive_skips,
            "world_size": self.dist.world_size,
            "student": model_state, "ema": self.ema.full_state_dict(),
            "optimizer": optim_state, "sources": sources,
            "torch_rng": torch.get_rng_state(),
            **{key: self._term_state(*term) for key, term in self._extra_terms().items()},
        }

    def _extra_terms(self) -> dict:
        """``{checkpoint key: (term dict, its module's key in the dict, the module's key in the
        checkpoint)}`` of the extra sample terms that are on."""
        terms = {"adversarial": (self.adversarial, "disc", "heads"), "distribution_matching": (self.dmd, "fake", "fake")}
        return {key: term for key, term in terms.items() if term[0] is not None}

    def _term_state(self, term: dict, module: str, saved_as: str) -> dict:
        # the module is replicated (rank 0's copy stands for all); every rank's own generator
        return {saved_as: term[module].state_dict(), "optimizer": term["optimizer"].state_dict(),
                "generators": dist_utils.gather_objects(term["generator"].get_state(), self.dist)}

    def load_state_dict(self, state: dict) -> None:
        if int(state["world_size"]) != self.dist.world_size:
            raise UserError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                            f"{self.dist.world_size}: resume with the same number of processes")
        set_state_dict(self.student, self.optimizer, model_state_dict=state["student"],
                       optim_state_dict=state["optimizer"], options=FULL_STATE)
        self.ema.load_full_state_dict(state["ema"])
        self.source.load_state_dict(_with_prompt_order(state["sources"][self.dist.rank], state["sources"][0]))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.consecutive_skips = int(state["consecutive_skips"])
        for key, (term, module, saved_as) in self._extra_terms().items():
            if key not in state:
                raise UserError(f"the checkpoint was written without objective.{key}: resume with "
                                f"objective.{key}.weight=0, or start a new run")
            saved = state[key]
            term[module].load_state_dict(saved[saved_as])
            term["optimizer"].load_state_dict(saved["optimizer"])
            term["generator"].set_state(saved["generators"][self.dist.rank])

    def save_checkpoint(self, folder: Path) -> Path | None:
        state = self.state_dict()  # collective: every rank takes part
        path = None
        if self.dist.is_main:
            try:
                path = save_checkpoint(state, folder / "checkpoints", self.step, self.cfg.keep_checkpoints)
            except OSError as exc:  # full disk, permissions: the previous checkpoint is untouched
                previous = latest_checkpoint(folder / "checkpoints")
                raise TrainingStopped(
                    f"could not write the checkpoint of step {self.step} ({exc.strerror or exc}): free space or fix "
                    f"permissions in {folder}, then `tbcm distill --resume {folder}`; last good checkpoint: "
                    f"{previous or 'none'}") from None
        dist_utils.barrier(self.dist)
        return path

    # -- the whole run ----------------------------------------------------------------------
    def student_for_sampling(self) -> Student:
        """An unsharded CPU copy of the student holding the EMA weights. Collective under FSDP2."""
        ema_state = self.ema.full_state_dict()
        meta = self.teacher_bundle.meta
        student = Student(copy.deepcopy(self._student_template), meta.sigma_d, meta.timestep_scale)
        # the EMA averages parameters; buffers (SD3's fixed position table) stay the template's
        student.load_state_dict({**student.state_dict(), **ema_state})
        return student.eval()

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
                                            "start_error": self.start_err,
                                            "pairs_per_s": pairs_per_s, "seconds": now - start,
                                            "peak_mem_mb": peak_memory_mb(self.device)})
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", pairs_s=f"{pairs_per_s:.0f}", r=f"{stats['r']:.2f}")
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint(out)
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.step < cfg.steps:
                    self.save_progress_grid(out, log)
        finally:
            bar.close()
            if log is not None:
                log.close()
        self.save_checkpoint(out)
        self.peak_mem_mb = peak_memory_mb(self.device)
        final = self.student_for_sampling()  # every rank: gathering shards is collective
        if main:
            self.save_student(final, out / "student")
            self.save_grids(final, out)
        dist_utils.barrier(self.dist)
        return out

    @torch.no_grad()
    def save_progress_grid(self, out: Path, log: MetricsLog | None) -> None:
        """``out/samples/step_N.png`` of the EMA student now (and into TensorBoard when installed).
        Collective under FSDP2 (the EMA is gathered); rank 0 writes."""
        student = self.student_for_sampling()
        if not self.dist.is_main:
            return
        image = panels(self.grid_panels(student))
        save_png(image, out / "samples" / f"step_{self.step:08d}.png")
        if log is not None:
            log.add_image("samples", image, self.step)

    def save_student(self, student: Student, path: Path) -> Path:
        tmeta = self.teacher_bundle.meta
        meta = ModelMeta(
            kind="student", sigma_d=tmeta.sigma_d, channels=tmeta.channels, image_size=tmeta.image_size,
            network=student.network.config.to_dict(), prompt_encoder=self.encoder.config(),
            timestep_scale=tmeta.timestep_scale, blank_value=tmeta.blank_value, family=tmeta.family,
            extra={"teacher": str(self.cfg.teacher), "steps": self.step, "skipped_steps": self.skipped,
                   "default_cfg_scale": self.cfg.sample.cfg_scale,
                   "shift": self.cfg.sample.student_shift, "teacher_shift": self.cfg.sample.shift,
                   "fresh_noise": float(self.cfg.sample.student_fresh_noise),
                   "routes": {str(k): v for k, v in routes_by_steps(self.cfg.sample.student_routes).items()},
                   "cfg_scales": [float(w) for w in self.cfg.cfg_scales],
                   "guidance_interval": [float(a) for a in self.cfg.guidance_interval]},
        )
        return save_bundle(Bundle(meta, student.network, self.encoder, student.logvar_head), path)

    @torch.no_grad()
    def grid_panels(self, student: Student):
        """The titled panels: teacher (guided, many steps) beside the student (1, 2, 4 steps),
        same prompts, same seeds. Uses only its own seeded generators: the training RNG streams
        (and so an exact resume) are untouched."""
        s, prompts = self.cfg.sample, self.grid_prompts
        rows = len(prompts)
        # On the training device: a real teacher's 16-step grids would take hours on a CPU.
        teacher, decode = self.teacher, self.teacher_bundle.decode
        student = student.to(self.device)
        named = [(f"teacher {s.teacher_steps} steps",
                  grid_image(teacher_samples(teacher, prompts, s.cfg_scale, s.teacher_steps, s.seeds, s.shift,
                                             decode=decode), rows))]
        routes = routes_by_steps(s.student_routes)
        for n in s.student_steps:
            pixels = student_samples(student, self.encoder, prompts, s.cfg_scale, n, s.seeds, s.student_shift,
                                     decode=decode, fresh_noise=s.student_fresh_noise, routes=routes)
            named.append((f"student {n} step{'s' if n > 1 else ''}", grid_image(pixels, rows)))
        return named

    @torch.no_grad()
    def save_grids(self, student: Student, folder: Path) -> None:
        """``samples.png`` (all panels) and ``samples_<panel>.png`` in ``folder``."""
        named = self.grid_panels(student)
        for title, im in named:
            save_png(im, folder / f"samples_{title.replace(' ', '_')}.png")
        save_png(panels(named), folder / "samples.png")
