"""Sana teachers and students as tbcm :class:`~tbcm.models.bundle.Bundle` s.

* Teacher: a diffusers Sana pipeline folder (``SanaPipeline`` / ``SanaSprintPipeline`` layout:
  ``transformer/``, ``text_encoder/``, ``tokenizer/``, ``vae/``). The VAE is loaded only when
  images are wanted (sample grids, evaluation), never for training.
* Student folder (written by :func:`tbcm.models.families.common.write_transformer_folder`): ``model.yaml``
  (``family: sana``; the teacher folder whose text encoder and VAE it uses), ``transformer/``
  (the student, diffusers ``save_pretrained``) and ``logvar_head.safetensors``.
"""

from __future__ import annotations

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
    SANA_SIGMA_D,
    SanaVelocityNet,
    use_math_cross_attention,
)
from .text import SanaPromptEncoder

def teacher_time_multiplier(transformer) -> float:
    """What ``SanaPipeline`` feeds: scheduler time ``1000 tau`` times ``config.timestep_scale``."""
    return 1000.0 * float(transformer.config.get("timestep_scale", 1.0))


def load_teacher(path: str | os.PathLike, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", time_multiplier: float | None = None) -> Bundle:
    """The teacher of a Sana pipeline folder. ``time_multiplier`` overrides what the config implies."""
    quiet_libraries()
    path = Path(path)
    cls = pipeline_class_name(path)
    dt = torch_dtype(dtype)
    transformer = load_transformer(path / "transformer", "SanaTransformer2DModel", "Sana", dt).eval().requires_grad_(False)
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
    return Bundle(meta, network, encoder, None, latent_decoder(path, SANA_SIGMA_D, "AutoencoderDC", "Sana"))


def load_student(path: Path, meta: ModelMeta, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", **_) -> Bundle:
    """A student folder (see the module notes); text encoder and VAE from its teacher."""
    quiet_libraries()
    transformer = load_transformer(path / "transformer", "SanaTransformer2DModel", "Sana", torch_dtype(dtype)).eval()
    use_math_cross_attention(transformer)
    network = SanaVelocityNet(transformer, float(meta.network.get("time_multiplier", 1.0)))
    teacher_folder = student_teacher_folder(path, meta)
    encoder = SanaPromptEncoder(teacher_folder, cache_dir=text_cache,
                                complex_human_instruction=meta.prompt_encoder.get("complex_human_instruction", True))
    return Bundle(meta, network, encoder, load_logvar_head(path),
                  latent_decoder(teacher_folder, meta.sigma_d, "AutoencoderDC", "Sana"))
