"""Sana teachers and students as tbcm :class:`~tbcm.models.bundle.Bundle` s.

* Teacher: a diffusers Sana pipeline folder (``SanaPipeline`` / ``SanaSprintPipeline`` layout:
  ``transformer/``, ``text_encoder/``, ``tokenizer/``, ``vae/``). The VAE is loaded only when
  images are wanted (sample grids, evaluation), never for training.
* Student folder: ``model.yaml`` (``family: sana``; the teacher folder whose text encoder and VAE
  it uses), ``transformer/`` (the student, diffusers ``save_pretrained``) and
  ``logvar_head.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..errors import UserError
from .bundle import Bundle, ModelMeta
from .families import load_vae, quiet_libraries
from .sana import (
    SANA_SIGMA_D,
    SanaVelocityNet,
    load_sana_transformer,
    pipeline_class_name,
    use_math_cross_attention,
)
from .sana_text import SanaPromptEncoder

PIPELINE_PREFIXES = ("Sana",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _dtype(name: str | torch.dtype | None) -> torch.dtype:
    if name is None or isinstance(name, torch.dtype):
        return name or torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def teacher_time_multiplier(transformer) -> float:
    """What ``SanaPipeline`` feeds: scheduler time ``1000 tau`` times ``config.timestep_scale``."""
    return 1000.0 * float(transformer.config.get("timestep_scale", 1.0))


def latent_decoder(folder: str | os.PathLike, sigma_d: float):
    """``decode(x0 [B, C, h, w] TrigFlow latents) -> pixels [B, 3, H, W]`` in [-1, 1] with the DC-AE."""

    @torch.no_grad()
    def decode(x0: torch.Tensor) -> torch.Tensor:
        # decode where the latents are
        vae = load_vae(str(Path(folder).resolve()), "AutoencoderDC", "Sana").to(x0.device)
        latents = (x0 / sigma_d).to(vae.dtype) / vae.config.scaling_factor
        return vae.decode(latents, return_dict=False)[0].float().clamp(-1, 1).cpu()

    return decode


def load_teacher(path: str | os.PathLike, dtype: str | torch.dtype | None = None,
                      text_cache: str | None = "default", time_multiplier: float | None = None) -> Bundle:
    """The teacher of a Sana pipeline folder. ``time_multiplier`` overrides what the config implies."""
    quiet_libraries()
    path = Path(path)
    cls = pipeline_class_name(path)
    dt = _dtype(dtype)
    transformer = load_sana_transformer(path / "transformer", dt).eval().requires_grad_(False)
    if transformer.config.guidance_embeds:
        raise UserError(f"{path}/transformer already has a guidance embedding (a distilled Sana-Sprint student?): "
                        "pass the teacher it was distilled from")
    multiplier = float(time_multiplier) if time_multiplier is not None else teacher_time_multiplier(transformer)
    network = SanaVelocityNet(transformer, multiplier)
    encoder = SanaPromptEncoder(path, cache_dir=text_cache, dtype=dt)
    c = transformer.config
    meta = ModelMeta(kind="teacher", sigma_d=SANA_SIGMA_D, channels=c.in_channels, image_size=c.sample_size,
                     network=network.config.to_dict(), prompt_encoder=encoder.config(), timestep_scale=1.0,
                     blank_value=0.0, family="sana", extra={"pipeline": str(path.resolve()), "class": cls})
    return Bundle(meta, network, encoder, None, latent_decoder(path, SANA_SIGMA_D))


def write_student(bundle: Bundle, folder: Path) -> None:
    """``model.yaml`` + ``transformer/`` (diffusers) + ``logvar_head.safetensors`` into ``folder``."""
    (folder / "model.yaml").write_text(yaml.safe_dump(bundle.meta.to_dict(), sort_keys=False))
    bundle.network.transformer.save_pretrained(str(folder / "transformer"), safe_serialization=True)
    if bundle.logvar_head is not None:
        state = {k: v.detach().contiguous().cpu() for k, v in bundle.logvar_head.state_dict().items()}
        save_file(state, str(folder / "logvar_head.safetensors"))


def load_student(path: Path, meta: ModelMeta, dtype: str | torch.dtype | None = None,
                      text_cache: str | None = "default", **_) -> Bundle:
    """A student folder written by :func:`write_student`; text encoder and VAE from its teacher."""
    from .student import LogvarHead

    quiet_libraries()
    transformer = load_sana_transformer(path / "transformer", _dtype(dtype)).eval()
    use_math_cross_attention(transformer)
    network = SanaVelocityNet(transformer, float(meta.network.get("time_multiplier", 1.0)))
    teacher_folder = Path(meta.prompt_encoder["folder"])
    if not teacher_folder.is_dir():
        raise UserError(f"the student in {path} takes its text encoder from {teacher_folder}, which does not exist: "
                        f"restore that folder or edit prompt_encoder.folder in {path}/model.yaml")
    encoder = SanaPromptEncoder(teacher_folder, cache_dir=text_cache,
                                complex_human_instruction=meta.prompt_encoder.get("complex_human_instruction", True))
    logvar_head = None
    if (path / "logvar_head.safetensors").is_file():
        logvar_head = LogvarHead()
        logvar_head.load_state_dict(load_file(str(path / "logvar_head.safetensors")))
    return Bundle(meta, network, encoder, logvar_head, latent_decoder(teacher_folder, meta.sigma_d))
