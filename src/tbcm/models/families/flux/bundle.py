"""FLUX teachers and students as tbcm :class:`~tbcm.models.bundle.Bundle` s.

* Teacher: a diffusers ``FluxPipeline`` folder (``transformer/``, ``text_encoder/`` + ``tokenizer/``
  (CLIP), ``text_encoder_2/`` + ``tokenizer_2/`` (T5), ``vae/``) whose transformer has no guidance
  embedding. The VAE is loaded only when images are wanted (sample grids, evaluation).
* Latent size: the VAE's ``sample_size`` (pixels) over its downsampling factor -- 1024 / 8 = 128 for
  FLUX.1, what ``FluxPipeline`` generates by default; 128 without a readable ``vae/config.json``.
* sigma_d = 0.5, as for Sana: the flow latents (VAE latents shifted and scaled by the VAE's
  ``shift_factor`` / ``scaling_factor``, about unit variance) are TrigFlow's ``x0 / sigma_d``; the
  teacher's ODE is the same whatever sigma_d, it sets the student's output scale.
* Student folder (written by :func:`tbcm.models.families.common.write_transformer_folder`): ``model.yaml`` (``family: flux``; the teacher folder whose text encoders and
  VAE it uses), ``transformer/`` (diffusers ``save_pretrained``) and ``logvar_head.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ....errors import UserError
from ...bundle import Bundle, ModelMeta, load_logvar_head
from ...registry import pipeline_class_name
from ..common import (
    latent_decoder,
    load_transformer,
    quiet_libraries,
    student_teacher_folder,
    torch_dtype,
)
from .network import (
    FLUX_SIGMA_D,
    FluxVelocityNet,
    guidance_distilled_message,
    use_math_attention,
)
from .text import FluxPromptEncoder

DEFAULT_LATENT_SIZE = 128  # FluxPipeline.default_sample_size


def latent_size(folder: Path) -> int:
    """Latent height = width of the images ``FluxPipeline`` makes by default with this folder's VAE."""
    try:
        cfg = json.loads((Path(folder) / "vae" / "config.json").read_text())
        size = int(cfg["sample_size"]) // 2 ** (len(cfg["block_out_channels"]) - 1)
    except Exception:  # noqa: BLE001 - no readable VAE config: FluxPipeline's default
        return DEFAULT_LATENT_SIZE
    if size < 2 or size % 2:
        raise UserError(f"{folder}/vae/config.json gives a latent size of {size}; FLUX packs 2x2 latent patches, "
                        "so it must be even: fix sample_size there")
    return size


def load_teacher(path: str | os.PathLike, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", time_multiplier: float | None = None) -> Bundle:
    """The teacher of a FLUX pipeline folder (transformer without guidance embedding)."""
    quiet_libraries()
    path = Path(path)
    cls = pipeline_class_name(path)
    if time_multiplier not in (None, 1, 1.0):
        raise UserError(f"teacher_time_multiplier={time_multiplier} applies to Sana teachers only: a FLUX transformer "
                        "takes the flow time as FluxPipeline feeds it; leave it unset")
    dt = torch_dtype(dtype)
    transformer = load_transformer(path / "transformer", "FluxTransformer2DModel", "FLUX", dt).eval().requires_grad_(False)
    if transformer.config.guidance_embeds:
        raise UserError(guidance_distilled_message(f"{path}/transformer"))
    size = latent_size(path)
    network = FluxVelocityNet(transformer, size)
    encoder = FluxPromptEncoder(path, cache_dir=text_cache, dtype=dt)
    meta = ModelMeta(kind="teacher", sigma_d=FLUX_SIGMA_D, channels=network.config.in_channels, image_size=size,
                     network=network.config.to_dict(), prompt_encoder=encoder.config(), timestep_scale=1.0,
                     blank_value=0.0, family="flux", extra={"pipeline": str(path.resolve()), "class": cls})
    return Bundle(meta, network, encoder, None, latent_decoder(path, FLUX_SIGMA_D, "AutoencoderKL", "FLUX"))


def load_student(path: Path, meta: ModelMeta, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", **_) -> Bundle:
    """A student folder (see the module notes); text encoders and VAE from its teacher."""
    quiet_libraries()
    transformer = load_transformer(path / "transformer", "FluxTransformer2DModel", "FLUX", torch_dtype(dtype)).eval()
    use_math_attention(transformer)
    network = FluxVelocityNet(transformer, meta.image_size)
    teacher_folder = student_teacher_folder(path, meta)
    encoder = FluxPromptEncoder(teacher_folder, cache_dir=text_cache)
    return Bundle(meta, network, encoder, load_logvar_head(path),
                  latent_decoder(teacher_folder, meta.sigma_d, "AutoencoderKL", "FLUX"))
