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
from .models.adapter import valid_interval
from .config_migration import migrate_override, migrate_tree
from .models.builtin.dit import DiTConfig
from .models.lora import StudentConfig
from .objectives.registry import ObjectiveConfig, check_terms
from .pairs.forward import ForwardConfig
from .pairs.trajectory import TrajectoryConfig
from .sampling import routes_by_steps

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
    # schedule; on the digits it degrades past ~1200 steps, FID 12.7 -> 49 by 2400: docs/notebook)
    decay: str = "cosine"
    decay_to: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    ema_decay: float = 0.99  # EMA of the student; the EMA is what is saved and sampled

    def check(self, cfg, check) -> None:
        check(_finite_positive(self.lr), "optim.lr", self.lr, "a positive number")
        check(self.name in OPTIMIZERS, "optim.name", self.name, f"one of {', '.join(OPTIMIZERS)}")
        n_betas = 3 if self.name == "came" else 2
        check(len(self.betas) == n_betas and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas,
              f"{n_betas} numbers in [0, 1) for optim.name={self.name}"
              + (" (the official CAME: [0.9, 0.999, 0.9999])" if self.name == "came" else ""))
        check(len(self.came_eps) == 2 and all(_finite_positive(e) for e in self.came_eps), "optim.came_eps",
              self.came_eps, "two positive numbers")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        check(self.decay in ("constant", "cosine"), "optim.decay", self.decay, "constant or cosine")
        check(0 <= self.decay_to <= 1, "optim.decay_to", self.decay_to, "in [0, 1] (a fraction of optim.lr)")
        check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0 (0 = off)")
        check(0 <= self.ema_decay < 1, "optim.ema_decay", self.ema_decay, "in [0, 1)")


@dataclass
class SamplerConfig:
    """The student's few-step sampler, saved with it (:class:`tbcm.sampler.StudentSampler`: what
    ``tbcm sample``, ``tbcm eval``, export and the grids use). The defaults are sCM's and
    Sana-Sprint's; a teacher's measured sampler lives in its config (configs/distill_digits.yaml)."""

    # the guidance input w the student samples with; None = the middle of cfg_scales
    cfg_scale: float | None = None
    shift: float = 2.5  # route of counts without an explicit one; the 2-step middle angle is arctan(shift) rad
    # re-noising between steps: eps = a eps_fresh + sqrt(1 - a^2) eps_implied, a = fresh_noise
    # (1 = sCM's fresh noise, as SanaSprintPipeline's SCMScheduler; 0 = the noise the state implies)
    fresh_noise: float = 1.0
    # explicit routes: lists of middle angles in radians, decreasing in (0, pi/2); a list of n - 1
    # angles is the n-step route, e.g. [[1.1]] runs 2 steps at pi/2, 1.1 (then 0), as FastGen's t_list
    routes: list[list[float]] = field(default_factory=list)
    # after training, choose the 2- and 4-step routes and the re-noising share by the student's
    # fidelity to its teacher on tune_images images of tune noise (tbcm.sampler_tuning, as
    # `tbcm tune-sampler`); the settings above are where it starts and stay a candidate
    tune: bool = True
    tune_images: int = 512
    # re-noising shares the tuning tries ([1.0]: fresh noise only, what a stock pipeline's scheduler does)
    tune_fresh_noise: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])

    def check(self, cfg, check) -> None:
        check(self.tune_images >= 2, "sampler.tune_images", self.tune_images, "an integer >= 2")
        check(len(self.tune_fresh_noise) > 0 and all(0.0 <= f <= 1.0 for f in self.tune_fresh_noise),
              "sampler.tune_fresh_noise", self.tune_fresh_noise, "a non-empty list of shares in [0, 1]")
        check(self.cfg_scale is None or (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0), "sampler.cfg_scale",
              self.cfg_scale, ">= 0, or null (the middle of cfg_scales)")
        check(_finite_positive(self.shift), "sampler.shift", self.shift, "a positive number")
        check(0.0 <= self.fresh_noise <= 1.0, "sampler.fresh_noise", self.fresh_noise,
              "a share in [0, 1] (1 = fresh noise at every step, 0 = the noise implied by the state)")
        try:
            routes_by_steps(self.routes)
        except UserError as exc:
            raise UserError(f"invalid value sampler.routes={self.routes}: {exc}") from None


@dataclass
class PreviewConfig:
    """The sample grids a run writes (``samples*.png``): what a person looks at, not what is saved."""

    prompts: list[str] = field(default_factory=list)  # grid rows; empty = the first 10 training prompts
    seeds: int = 6  # images per prompt (columns), seeds 0..seeds-1
    teacher_steps: int = 16  # the teacher's column: guided steps on the rollouts' shift
    student_steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    every: int = 0  # also write DIR/samples/step_N.png every N steps; 0 = only at the end

    def check(self, cfg, check) -> None:
        check(self.seeds >= 1, "preview.seeds", self.seeds, "a positive integer")
        check(self.teacher_steps >= 1, "preview.teacher_steps", self.teacher_steps, "a positive integer")
        check(len(self.student_steps) > 0 and all(n >= 1 for n in self.student_steps), "preview.student_steps",
              self.student_steps, "a non-empty list of positive integers")
        check(self.every >= 0, "preview.every", self.every, ">= 0 (0 = only at the end)")


SOURCES = ("trajectory", "cache", "forward", "teacher_x0")


@dataclass
class CacheConfig:
    dir: str = ""  # a folder written by `tbcm trajectories` (read when source=cache)
    shards: int = 8  # `tbcm trajectories`: shards to write ...
    prompts_per_shard: int = 64  # ... each with this many trajectories

    def check(self, cfg, check) -> None:
        check(cfg.source != "cache" or bool(self.dir), "cache.dir", self.dir,
              "a folder written by `tbcm trajectories` when source=cache")
        check(self.shards >= 1, "cache.shards", self.shards, "a positive integer")
        check(self.prompts_per_shard >= 1, "cache.prompts_per_shard", self.prompts_per_shard, "a positive integer")


@dataclass
class DistillConfig:
    """A distillation run. The defaults are the paper's recipe (hustvl/TBCM, Sana-Sprint), what a
    teacher nobody tuned for gets; configs/ holds recipes measured on one teacher."""

    teacher: str = "builtin"  # a teacher folder (tbcm, or a diffusers pipeline folder), "builtin", "builtin:scenes"
    teacher_dtype: str = "fp32"  # diffusers teachers: "fp32", "bf16" or "fp16" (teacher + text encoder)
    teacher_time_multiplier: float = 0.0  # diffusers Sana: network timestep = this * tau; 0 = from its config
    text_cache: str = "default"  # per-prompt text-encoder outputs: "default" ($TBCM_CACHE), a folder, or "none"
    prompts: str = "builtin"  # a text file, one prompt per line, "builtin" or "builtin:scenes"
    seed: int = 0
    steps: int = 2400  # optimiser steps
    prompts_per_step: int = 8  # prompts rolled out per step; pairs per step = this * (K - 1)
    # the guidance scales w each rollout draws from; the student takes w as an input. [] = the
    # teacher's own scale g and g +- 0.5 (TBCM: {4, 4.5, 5} around Sana's 4.5), g from the teacher's
    # model.yaml `guidance`, else its family's pipeline default, else 4.5 (tbcm.models.guidance)
    cfg_scales: list[float] = field(default_factory=list)
    # guide the teacher only at angles in (lo, hi] (TrigFlow radians; pi/2 = pure noise) and run it
    # unguided elsewhere, in the rollout and wherever the teacher is guided (Kynkaanniemi et al.
    # 2024); [] = guided at every angle (TBCM). The student's w then means "w inside the interval".
    guidance_interval: list[float] = field(default_factory=list)
    # "trajectory" (TBCM: online teacher rollout), "cache" (trajectory shards on disk),
    # "forward" (sCM baseline: real images forward-noised), "teacher_x0" (teacher samples forward-noised)
    source: str = "trajectory"
    cache: CacheConfig = field(default_factory=CacheConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    pairs: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    student: StudentConfig = field(default_factory=StudentConfig)  # full, or LoRA adapters on the teacher's weights
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # sCM, then one section per term
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    log_every: int = 10
    checkpoint_every: int = 200  # steps between checkpoints (a final one is always written)
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

    def check(self, cfg, check) -> None:
        check(self.steps >= 1, "steps", self.steps, "a positive integer")
        check(self.prompts_per_step >= 1, "prompts_per_step", self.prompts_per_step, "a positive integer")
        check(all(math.isfinite(w) and w >= 0 for w in self.cfg_scales),
              "cfg_scales", self.cfg_scales, "a list of scales >= 0 ([] = around the teacher's own guidance)")
        gi = list(self.guidance_interval)
        check(not gi or valid_interval(gi), "guidance_interval", gi,
              "[] (guided everywhere) or [lo, hi] angles with 0 <= lo < hi <= pi/2, e.g. [0.0, 0.5]")
        check(self.source in SOURCES, "source", self.source, f"one of {', '.join(SOURCES)}")
        check(self.log_every >= 1, "log_every", self.log_every, "a positive integer")
        check(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "a positive integer")
        check(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "a positive integer")
        check(self.start_check_max_error >= 0, "start_check_max_error", self.start_check_max_error, ">= 0 (0 = off)")
        check(self.max_consecutive_skips >= 1, "max_consecutive_skips", self.max_consecutive_skips, "a positive integer")
        check(self.precision in ("fp32", "bf16"), "precision", self.precision, "'fp32' or 'bf16'")
        check(self.parallel in ("ddp", "fsdp2"), "parallel", self.parallel, "'ddp' or 'fsdp2'")
        check(self.device in ("auto", "cpu", "cuda"), "device", self.device, "'auto', 'cpu' or 'cuda'")
        check(self.threads >= 0, "threads", self.threads, ">= 0 (0 = default)")
        check(self.teacher_dtype in ("fp32", "bf16", "fp16"), "teacher_dtype", self.teacher_dtype,
              "'fp32', 'bf16' or 'fp16'")
        check(self.teacher_time_multiplier >= 0, "teacher_time_multiplier", self.teacher_time_multiplier,
              ">= 0 (0 = from the teacher's config)")
        for section in (self.cache, self.forward, self.pairs, self.student, self.objective, self.optim, self.sampler,
                        self.preview):
            section.check(self, check)
        check_terms(self, check)


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
    # "digits" (the train split of scikit-learn's digits: never an FID reference image; "digits_all": all
    # 1,797), "scenes", a folder of images, or an .npz
    data: str = "digits"
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
    # the guidance of the teacher's sample grid, recorded as its model.yaml `guidance`: the scale
    # its owner samples it at, which a distillation that sets no cfg_scales trains around
    sample_cfg_scale: float = 4.5
    sample_steps: int = 16
    threads: int = 0

    def dit_config(self, channels: int) -> DiTConfig:
        m = self.model
        return DiTConfig(in_channels=channels, image_size=self.image_size, patch_size=m.patch_size,
                         hidden=m.hidden, depth=m.depth, heads=m.heads, mlp_ratio=m.mlp_ratio, text_dim=m.text_dim,
                         text_cross_attention=m.text_cross_attention)

    def check(self, cfg, check) -> None:
        check(self.steps >= 1, "steps", self.steps, "a positive integer")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
        check(_finite_positive(self.lr), "lr", self.lr, "a positive number")
        check(self.image_size >= 2, "image_size", self.image_size, "at least 2")
        check(self.image_size % self.model.patch_size == 0, "image_size", self.image_size,
              f"divisible by model.patch_size={self.model.patch_size}")
        check(self.model.hidden % self.model.heads == 0, "model.hidden", self.model.hidden,
              f"divisible by model.heads={self.model.heads}")
        check(self.model.text_dim % 4 == 0, "model.text_dim", self.model.text_dim, "divisible by 4")
        check(0 <= self.cond_dropout < 1, "cond_dropout", self.cond_dropout, "in [0, 1)")
        check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        check(_finite_positive(self.sigma_d), "sigma_d", self.sigma_d, "a positive number")
        check(math.isfinite(self.sample_cfg_scale) and self.sample_cfg_scale >= 0, "sample_cfg_scale",
              self.sample_cfg_scale, ">= 0 (the guidance you sample the teacher at)")
        check("{label}" in self.prompt_template, "prompt_template", self.prompt_template, "a text containing {label}")
        check(self.sample_steps >= 1, "sample_steps", self.sample_steps, "a positive integer")
        check(self.threads >= 0, "threads", self.threads, ">= 0 (0 = default)")


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
        layers.append(OmegaConf.create(migrate_tree(OmegaConf.to_container(loaded))))
    for item in overrides or []:
        if "=" not in item or item.startswith("="):
            raise UserError(f"cannot read override {item!r}: write it as key=value, e.g. steps=500")
        item = migrate_override(item)
        if item is None:  # a removed option at its off value
            continue
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
                   forward=replace(cfg.forward, data=cfg.forward.data if cfg.forward.data in ("digits", "digits_all", "scenes")
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
    """Range checks OmegaConf's types cannot express, each section's beside its dataclass. Raises
    :class:`UserError`; never changes ``cfg``."""
    if isinstance(cfg, (DistillConfig, TeacherTrainConfig)):
        cfg.check(cfg, _check)
