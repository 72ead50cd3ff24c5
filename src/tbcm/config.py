"""Configs are data: dataclass schemas, loaded from YAML plus ``key=value`` overrides (OmegaConf),
validated on load (types by OmegaConf, ranges here), saved beside every output.

Every problem is a :class:`UserError` of one line naming the key and the fix.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING as NO_FACTORY
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data import GENERATED_IMAGES
from .errors import UserError, brief
from .models.builtin.dit import DiTConfig
from .objectives.scm import ENDPOINT_WEIGHT, JVP_BACKENDS, TANGENT_NORMS, SCMConfig
from .pairs.forward import ForwardConfig
from .models.adapter import valid_interval
from .pairs.rollout_teacher import ROLLOUT_DTYPES
from .pairs.trajectory import TrajectoryConfig
from .sampling import routes_by_steps
from .trigflow import ROUTES

OPTIMIZERS = ("adamw", "came")


@dataclass
class OptimConfig:
    name: str = "adamw"  # "adamw" (torch) or "came" (hustvl/TBCM's, from pytorch-optimizer)
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # two for adamw, three for came
    came_eps: list[float] = field(default_factory=lambda: [1e-30, 1e-16])  # CAME's two epsilons
    weight_decay: float = 0.0
    warmup_steps: int = 100  # linear learning-rate warmup, then `decay`
    # after the warmup: "cosine" (from lr down to decay_to * lr at `steps`) or "constant" (TBCM's
    # schedule; on the digits it degrades past ~1200 steps, FID 12.7 -> 49 by 2400: docs/results.md)
    decay: str = "cosine"
    decay_to: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    ema_decay: float = 0.99  # EMA of the student; the EMA is what is saved and sampled


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=list)  # grid rows; empty = the first 10 training prompts
    seeds: int = 6  # images per prompt in the grids (columns), seeds 0..seeds-1
    # teacher guidance and student guidance input in the grids (and the student's default when it
    # samples): the digits student is at its best with input 3, the top of its range (docs/results.md)
    cfg_scale: float = 3.0
    teacher_steps: int = 16
    student_steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    shift: float = 2.5  # shift of the teacher's sampling route (its 16-step grids and evaluation)
    # shift of the few-step student's route, saved with the student (tbcm sample / eval / export use
    # it); its 2-step middle angle is arctan(student_shift) rad. Per teacher, measure it (tbcm eval
    # --shift, benchmarks/multistep_tune.py): the digits recipe's 2 steps are best at 0.25 (middle
    # angle 0.245 rad; 0.35 and 0.2 within 0.3 FID, 1.0 far worse: docs/results.md); the scenes 2.5
    # (configs/distill_scenes.yaml)
    student_shift: float = 0.25
    # the few-step student's re-noising between steps, saved with it (tbcm sample / eval use it):
    # eps = a eps_fresh + sqrt(1 - a^2) eps_implied with a = student_fresh_noise (1 = sCM's fresh
    # noise, what SanaSprintPipeline's SCMScheduler does; 0 = the noise the state implies;
    # tbcm.sampling.student_sample). A per-teacher setting, like the route: measure it (tbcm eval
    # --fresh-noise, benchmarks/multistep_tune.py); the digits recipe wants 0.5
    student_fresh_noise: float = 0.5
    # explicit routes, saved with the student: lists of middle angles in radians, decreasing in
    # (0, pi/2); a list of n - 1 angles is the n-step route, e.g. [[0.26, 0.25, 0.24]] runs 4 steps
    # at pi/2, 0.26, 0.25, 0.24 (then 0), as FastGen's t_list; counts without one take the shifted
    # route above; [] = none. The digits recipe's 4 steps restart three times near the 2-step's
    # middle angle (arctan 0.25 = 0.245 rad), as restart sampling does: routes that go on to small
    # angles (0.337, 0.06, 0.02 before) trailed the 2-step sample, and no route measured beat it by
    # more than the noise (benchmarks/multistep_tune.py --versus 2, docs/results.md)
    student_routes: list[list[float]] = field(default_factory=lambda: [[0.26, 0.25, 0.24]])


SOURCES = ("trajectory", "cache", "forward", "teacher_x0")


@dataclass
class CacheConfig:
    dir: str = ""  # a folder written by `tbcm trajectories` (read when source=cache)
    shards: int = 8  # `tbcm trajectories`: shards to write ...
    prompts_per_shard: int = 64  # ... each with this many trajectories


@dataclass
class DistillConfig:
    teacher: str = "builtin"  # a teacher folder (tbcm, or a diffusers Sana pipeline folder), "builtin", "builtin:scenes"
    teacher_dtype: str = "fp32"  # diffusers teachers: "fp32", "bf16" or "fp16" (teacher + text encoder)
    teacher_time_multiplier: float = 0.0  # diffusers Sana: network timestep = this * tau; 0 = from its config
    text_cache: str = "default"  # per-prompt text-encoder outputs: "default" ($TBCM_CACHE), a folder, or "none"
    prompts: str = "builtin"  # a text file, one prompt per line, "builtin" or "builtin:scenes"
    seed: int = 0
    # optimiser steps; with the cosine decay below the digits student measured best at 2400 (1-step
    # FID 9.5 +- 1.7 over 3 seeds; constant lr peaks near 1200 and then degrades: docs/results.md)
    steps: int = 2400
    prompts_per_step: int = 8  # prompts rolled out per step; pairs per step = this * (K - 1)
    # the guidance range the student is distilled on (it takes w as an input). The digits teacher is
    # at its best near w = 1 (FID 8.5 at 16 steps, 55 at 4.5); guided only late (the interval below)
    # a scale costs it little FID, so the default range reaches 3, where the 1-step student has the
    # teacher's adherence (docs/results.md, "The interval recipe on ten draws")
    cfg_scales: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    # guide the teacher only at angles in (lo, hi] (TrigFlow radians; pi/2 = pure noise) and run it
    # unguided elsewhere, in the rollout and wherever the teacher is guided (Kynkaanniemi et al.
    # 2024); [] = guided at every angle. The student's w input then means "w inside the interval".
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 0.5])
    # "trajectory" (TBCM: online teacher rollout), "cache" (trajectory shards on disk),
    # "forward" (sCM baseline: real images forward-noised), "teacher_x0" (teacher samples forward-noised)
    source: str = "trajectory"
    cache: CacheConfig = field(default_factory=CacheConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    pairs: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    objective: SCMConfig = field(default_factory=SCMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    log_every: int = 10
    checkpoint_every: int = 200  # steps between checkpoints (a final one is always written)
    sample_every: int = 0  # write DIR/samples/step_N.png (teacher | student grids) every N steps; 0 = off
    keep_checkpoints: int = 3
    max_consecutive_skips: int = 10  # stop after this many non-finite steps in a row
    # refuse to start when the untrained student's F is further than this (relative) from the
    # teacher's on a batch of pairs (a mis-timed teacher); 0 = no check
    start_check_max_error: float = 0.01
    precision: str = "fp32"  # "fp32" or "bf16" (autocast for the gradient forward; the JVP stays fp32)
    grad_checkpointing: bool = False  # recompute activations of the gradient forward in backward
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated student) or "fsdp2" (sharded student)
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda"
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass
class TeacherModelConfig:
    patch_size: int = 2
    hidden: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 64
    max_words: int = 8
    text_cross_attention: bool = False  # image tokens attend to the prompt tokens in every block


@dataclass
class TeacherTrainConfig:
    data: str = "digits"  # "digits" (scikit-learn's, offline), "scenes", a folder of images, or an .npz
    image_size: int = 8
    generated_images: int = GENERATED_IMAGES  # images drawn from a generated source ("scenes")
    prompt_template: str = "a handwritten digit {label}"  # for labels (npz) or class folders
    seed: int = 0
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    cond_dropout: float = 0.1  # probability of training on the empty prompt (for CFG)
    ema_decay: float = 0.999
    sigma_d: float = 0.5  # TrigFlow data scale recorded with the teacher
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    sample_cfg_scale: float = 4.5
    sample_steps: int = 16
    threads: int = 0

    def dit_config(self, channels: int) -> DiTConfig:
        m = self.model
        return DiTConfig(in_channels=channels, image_size=self.image_size, patch_size=m.patch_size,
                         hidden=m.hidden, depth=m.depth, heads=m.heads, mlp_ratio=m.mlp_ratio, text_dim=m.text_dim,
                         text_cross_attention=m.text_cross_attention)


T = TypeVar("T")


def _all_keys(schema, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(schema):
        full = f"{prefix}{f.name}"
        keys.append(full)
        default = f.default_factory() if f.default_factory is not NO_FACTORY else None
        if is_dataclass(default):
            keys.extend(_all_keys(default, f"{full}."))
    return keys


def _omegaconf_message(exc: OmegaConfBaseException, schema) -> str:
    key = getattr(exc, "full_key", None) or ""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        close = difflib.get_close_matches(key, _all_keys(schema), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `tbcm distill --help` and configs/"
        return f"unknown config key {key!r}: {hint}"
    if key:
        return f"invalid value for config key {key!r} ({msg}): give a value of the right type"
    return f"invalid config ({msg})"


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a validated config: schema defaults <- YAML file <- ``key=value`` overrides."""
    base = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist: pass the path of a YAML file")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # noqa: BLE001 - YAML syntax errors come in many classes
            raise UserError(f"config file {path} is not valid YAML ({brief(exc)}): fix its syntax") from None
        if not isinstance(loaded, type(base)):
            raise UserError(f"config file {path} must hold a mapping of keys to values")
        layers.append(loaded)
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise UserError(f"cannot read override {item!r}: write it as key=value, e.g. steps=500")
        try:  # one layer per override, so a value that is not YAML is named
            layers.append(OmegaConf.from_dotlist([item]))
        except yaml.YAMLError as exc:
            raise UserError(f"cannot read the value of override {item!r} as YAML ({str(exc).splitlines()[0]}): "
                            "close its brackets and quote text with ':' in it, e.g. cfg_scales=[1.0,2.0]") from None
        except OmegaConfBaseException as exc:
            raise UserError(_omegaconf_message(exc, schema)) from None
    try:
        merged = OmegaConf.merge(base, *layers)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(_omegaconf_message(exc, schema)) from None
    validate(obj)
    return obj


def with_absolute_paths(cfg: DistillConfig) -> DistillConfig:
    """A copy whose path-valued keys (teacher, prompts, forward.data, cache.dir) are absolute when
    they name existing files, so a saved config works from any working folder (resume, eval)."""

    def absolute(value: str) -> str:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    return replace(cfg, teacher=absolute(cfg.teacher) if cfg.teacher != "builtin" else cfg.teacher,
                   prompts=absolute(cfg.prompts) if cfg.prompts != "builtin" else cfg.prompts,
                   forward=replace(cfg.forward, data=cfg.forward.data if cfg.forward.data in ("digits", "scenes")
                                   else absolute(cfg.forward.data)),
                   cache=replace(cfg.cache, dir=absolute(cfg.cache.dir)))


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def _check(ok: bool, key: str, value, need: str) -> None:
    if not ok:
        raise UserError(f"invalid value {key}={value!r}: it must be {need}")


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def validate(cfg) -> None:
    """Range checks OmegaConf's types cannot express. Raises :class:`UserError`."""
    if isinstance(cfg, DistillConfig):
        _check(cfg.steps >= 1, "steps", cfg.steps, "a positive integer")
        _check(cfg.prompts_per_step >= 1, "prompts_per_step", cfg.prompts_per_step, "a positive integer")
        _check(len(cfg.cfg_scales) > 0 and all(math.isfinite(w) and w >= 0 for w in cfg.cfg_scales),
               "cfg_scales", cfg.cfg_scales, "a non-empty list of scales >= 0")
        gi = list(cfg.guidance_interval)
        _check(not gi or valid_interval(gi),
               "guidance_interval", gi, "[] (guided everywhere) or [lo, hi] angles with 0 <= lo < hi <= pi/2, e.g. [0.0, 0.5]")
        _check(cfg.source in SOURCES, "source", cfg.source, f"one of {', '.join(SOURCES)}")
        _check(cfg.forward.p_std > 0, "forward.p_std", cfg.forward.p_std, "a positive number")
        _check(cfg.forward.pool_size >= 1, "forward.pool_size", cfg.forward.pool_size, "a positive integer")
        _check(cfg.forward.pool_steps >= 1, "forward.pool_steps", cfg.forward.pool_steps, "a positive integer")
        _check("{label}" in cfg.forward.prompt_template, "forward.prompt_template", cfg.forward.prompt_template,
               "a text containing {label}")
        _check(cfg.source != "cache" or bool(cfg.cache.dir), "cache.dir", cfg.cache.dir,
               "a folder written by `tbcm trajectories` when source=cache")
        _check(cfg.cache.shards >= 1, "cache.shards", cfg.cache.shards, "a positive integer")
        _check(cfg.cache.prompts_per_shard >= 1, "cache.prompts_per_shard", cfg.cache.prompts_per_shard,
               "a positive integer")
        _check(cfg.pairs.route_points >= 2, "pairs.route_points", cfg.pairs.route_points, "at least 2")
        _check(_finite_positive(cfg.pairs.shift), "pairs.shift", cfg.pairs.shift, "a positive number")
        _check(cfg.pairs.route in ROUTES, "pairs.route", cfg.pairs.route, f"one of {', '.join(ROUTES)}")
        _check(cfg.pairs.points_per_trajectory >= 0, "pairs.points_per_trajectory", cfg.pairs.points_per_trajectory,
               ">= 0 (0 = all points)")
        _check(cfg.pairs.renoised_points >= 0, "pairs.renoised_points", cfg.pairs.renoised_points, ">= 0 (0 = off)")
        _check(0 < cfg.pairs.renoised_max_angle <= math.pi / 2, "pairs.renoised_max_angle", cfg.pairs.renoised_max_angle,
               "an angle in (0, pi/2] radians, e.g. 0.4 (pi/2 = every route point)")
        _check(cfg.source != "cache" or cfg.pairs.renoised_points == 0, "pairs.renoised_points",
               cfg.pairs.renoised_points, "0 with source=cache (the cache holds trajectory points only)")
        _check(cfg.pairs.pool_prompts >= 0, "pairs.pool_prompts", cfg.pairs.pool_prompts, ">= 0 (0 = off)")
        _check(cfg.pairs.pool_reuse >= 1, "pairs.pool_reuse", cfg.pairs.pool_reuse, "a positive integer")
        _check(cfg.pairs.rollout_dtype in ROLLOUT_DTYPES, "pairs.rollout_dtype", cfg.pairs.rollout_dtype,
               f"one of {', '.join(ROLLOUT_DTYPES)}")
        _check(cfg.source == "trajectory" or (cfg.pairs.rollout_dtype == "fp32" and not cfg.pairs.rollout_compile),
               "pairs.rollout_dtype/rollout_compile", f"{cfg.pairs.rollout_dtype}/{cfg.pairs.rollout_compile}",
               f"fp32/false with source={cfg.source} (they apply to the online trajectory rollout only)")
        _check(cfg.pairs.blank_threshold >= 0, "pairs.blank_threshold", cfg.pairs.blank_threshold, ">= 0 (0 = off)")
        o = cfg.objective
        _check(o.jvp in JVP_BACKENDS, "objective.jvp", o.jvp, f"one of {', '.join(JVP_BACKENDS)}")
        _check(o.tangent_norm in TANGENT_NORMS, "objective.tangent_norm", o.tangent_norm,
               f"one of {', '.join(TANGENT_NORMS)}")
        _check(o.tangent_norm_c >= 0, "objective.tangent_norm_c", o.tangent_norm_c, ">= 0")
        _check(o.warmup_steps >= 0, "objective.warmup_steps", o.warmup_steps, ">= 0")
        _check(o.calm_down_end >= o.calm_down_start >= 0, "objective.calm_down_end", o.calm_down_end,
               ">= objective.calm_down_start >= 0")
        _check(0 <= o.calm_down_to <= 1, "objective.calm_down_to", o.calm_down_to, "in [0, 1]")
        _check(_finite_positive(o.fd_eps), "objective.fd_eps", o.fd_eps, "a positive number")
        if o.endpoint_weight is None:  # the recipe's default, per source (resolved here, saved resolved)
            o.endpoint_weight = ENDPOINT_WEIGHT if cfg.source == "trajectory" else 0.0
        _check(isinstance(o.endpoint_weight, (int, float)) and o.endpoint_weight >= 0 and math.isfinite(o.endpoint_weight),
               "objective.endpoint_weight", o.endpoint_weight, ">= 0 (0 = off)")
        _check(o.endpoint_weight == 0 or cfg.source == "trajectory", "objective.endpoint_weight", o.endpoint_weight,
               f"0 with source={cfg.source} (the target is each pair's own trajectory end): drop it or set 0")
        _check(0 <= o.endpoint_min_angle < math.pi / 2, "objective.endpoint_min_angle", o.endpoint_min_angle,
               "in [0, pi/2) radians (TrigFlow time; 0 = every pair)")
        _check(o.endpoint_min_angle == 0 or o.endpoint_weight > 0, "objective.endpoint_min_angle",
               o.endpoint_min_angle, "0 unless objective.endpoint_weight > 0 (it windows that term)")
        _check(not cfg.pairs.noise_point or o.endpoint_weight > 0, "pairs.noise_point", cfg.pairs.noise_point,
               "false unless objective.endpoint_weight > 0 (only the endpoint term acts at pi/2)")
        a = o.adversarial
        _check(a.weight >= 0 and math.isfinite(a.weight), "objective.adversarial.weight", a.weight, ">= 0 (0 = off)")
        _check(len(a.blocks) > 0, "objective.adversarial.blocks", a.blocks, "a non-empty list of teacher block indices")
        _check(_finite_positive(a.lr), "objective.adversarial.lr", a.lr, "a positive number")
        _check(len(a.betas) == 2 and all(0 <= b < 1 for b in a.betas), "objective.adversarial.betas", a.betas,
               "two numbers in [0, 1)")
        _check(a.samples >= 1, "objective.adversarial.samples", a.samples, "a positive integer")
        _check(_finite_positive(a.t_std), "objective.adversarial.t_std", a.t_std, "a positive number")
        _check(a.start_step >= 0, "objective.adversarial.start_step", a.start_step, ">= 0")
        _check(a.weight == 0 or cfg.source == "trajectory", "objective.adversarial.weight", a.weight,
               "0 unless source=trajectory (the real side is the teacher's own final samples)")
        m = o.distribution_matching
        _check(m.weight >= 0 and math.isfinite(m.weight), "objective.distribution_matching.weight", m.weight,
               ">= 0 (0 = off)")
        _check(m.samples >= 1, "objective.distribution_matching.samples", m.samples, "a positive integer")
        _check(_finite_positive(m.lr), "objective.distribution_matching.lr", m.lr, "a positive number")
        _check(len(m.betas) == 2 and all(0 <= b < 1 for b in m.betas), "objective.distribution_matching.betas",
               m.betas, "two numbers in [0, 1)")
        _check(m.critic_steps >= 1, "objective.distribution_matching.critic_steps", m.critic_steps,
               "a positive integer")
        _check(_finite_positive(m.t_std), "objective.distribution_matching.t_std", m.t_std, "a positive number")
        _check(m.start_step >= 0, "objective.distribution_matching.start_step", m.start_step, ">= 0")
        _check(m.weight == 0 or a.weight == 0, "objective.distribution_matching.weight", m.weight,
               "0 while objective.adversarial.weight > 0 (one extra sample term at a time)")
        p = cfg.optim
        _check(_finite_positive(p.lr), "optim.lr", p.lr, "a positive number")
        _check(p.name in OPTIMIZERS, "optim.name", p.name, f"one of {', '.join(OPTIMIZERS)}")
        n_betas = 3 if p.name == "came" else 2
        _check(len(p.betas) == n_betas and all(0 <= b < 1 for b in p.betas), "optim.betas", p.betas,
               f"{n_betas} numbers in [0, 1) for optim.name={p.name}"
               + (" (the official CAME: [0.9, 0.999, 0.9999])" if p.name == "came" else ""))
        _check(len(p.came_eps) == 2 and all(_finite_positive(e) for e in p.came_eps), "optim.came_eps", p.came_eps,
               "two positive numbers")
        _check(p.weight_decay >= 0, "optim.weight_decay", p.weight_decay, ">= 0")
        _check(p.warmup_steps >= 0, "optim.warmup_steps", p.warmup_steps, ">= 0")
        _check(p.decay in ("constant", "cosine"), "optim.decay", p.decay, "constant or cosine")
        _check(0 <= p.decay_to <= 1, "optim.decay_to", p.decay_to, "in [0, 1] (a fraction of optim.lr)")
        _check(p.grad_clip >= 0, "optim.grad_clip", p.grad_clip, ">= 0 (0 = off)")
        _check(0 <= p.ema_decay < 1, "optim.ema_decay", p.ema_decay, "in [0, 1)")
        s = cfg.sample
        _check(s.seeds >= 1, "sample.seeds", s.seeds, "a positive integer")
        _check(s.teacher_steps >= 1, "sample.teacher_steps", s.teacher_steps, "a positive integer")
        _check(_finite_positive(s.shift), "sample.shift", s.shift, "a positive number")
        _check(_finite_positive(s.student_shift), "sample.student_shift", s.student_shift, "a positive number")
        _check(isinstance(s.student_fresh_noise, (int, float)) and 0.0 <= s.student_fresh_noise <= 1.0,
               "sample.student_fresh_noise", s.student_fresh_noise,
               "a share in [0, 1] (1 = fresh noise at every step, 0 = the noise implied by the state)")
        _check(len(s.student_steps) > 0 and all(n >= 1 for n in s.student_steps), "sample.student_steps",
               s.student_steps, "a non-empty list of positive integers")
        _check(s.cfg_scale >= 0, "sample.cfg_scale", s.cfg_scale, ">= 0")
        try:
            routes_by_steps(s.student_routes)
        except UserError as exc:
            raise UserError(f"invalid value sample.student_routes={s.student_routes}: {exc}") from None
        _check(cfg.log_every >= 1, "log_every", cfg.log_every, "a positive integer")
        _check(cfg.sample_every >= 0, "sample_every", cfg.sample_every, ">= 0 (0 = off)")
        _check(cfg.checkpoint_every >= 1, "checkpoint_every", cfg.checkpoint_every, "a positive integer")
        _check(cfg.keep_checkpoints >= 1, "keep_checkpoints", cfg.keep_checkpoints, "a positive integer")
        _check(cfg.start_check_max_error >= 0, "start_check_max_error", cfg.start_check_max_error, ">= 0 (0 = off)")
        _check(cfg.max_consecutive_skips >= 1, "max_consecutive_skips", cfg.max_consecutive_skips, "a positive integer")
        _check(cfg.precision in ("fp32", "bf16"), "precision", cfg.precision, "'fp32' or 'bf16'")
        _check(cfg.parallel in ("ddp", "fsdp2"), "parallel", cfg.parallel, "'ddp' or 'fsdp2'")
        _check(cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device, "'auto', 'cpu' or 'cuda'")
        _check(cfg.threads >= 0, "threads", cfg.threads, ">= 0 (0 = default)")
        _check(cfg.teacher_dtype in ("fp32", "bf16", "fp16"), "teacher_dtype", cfg.teacher_dtype,
               "'fp32', 'bf16' or 'fp16'")
        _check(cfg.teacher_time_multiplier >= 0, "teacher_time_multiplier", cfg.teacher_time_multiplier,
               ">= 0 (0 = from the teacher's config)")
    elif isinstance(cfg, TeacherTrainConfig):
        _check(cfg.steps >= 1, "steps", cfg.steps, "a positive integer")
        _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "a positive integer")
        _check(_finite_positive(cfg.lr), "lr", cfg.lr, "a positive number")
        _check(cfg.image_size >= 2, "image_size", cfg.image_size, "at least 2")
        _check(cfg.image_size % cfg.model.patch_size == 0, "image_size", cfg.image_size,
               f"divisible by model.patch_size={cfg.model.patch_size}")
        _check(cfg.model.hidden % cfg.model.heads == 0, "model.hidden", cfg.model.hidden,
               f"divisible by model.heads={cfg.model.heads}")
        _check(cfg.model.text_dim % 4 == 0, "model.text_dim", cfg.model.text_dim, "divisible by 4")
        _check(0 <= cfg.cond_dropout < 1, "cond_dropout", cfg.cond_dropout, "in [0, 1)")
        _check(0 <= cfg.ema_decay < 1, "ema_decay", cfg.ema_decay, "in [0, 1)")
        _check(_finite_positive(cfg.sigma_d), "sigma_d", cfg.sigma_d, "a positive number")
        _check("{label}" in cfg.prompt_template, "prompt_template", cfg.prompt_template, "a text containing {label}")
        _check(cfg.sample_steps >= 1, "sample_steps", cfg.sample_steps, "a positive integer")
        _check(cfg.threads >= 0, "threads", cfg.threads, ">= 0 (0 = default)")
