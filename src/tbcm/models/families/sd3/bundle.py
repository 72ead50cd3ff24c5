"""SD3 / SD3.5 teachers and students as tbcm :class:`~tbcm.models.bundle.Bundle` s.

* Teacher: a diffusers ``StableDiffusion3Pipeline`` folder (``transformer/``, ``text_encoder/`` +
  ``tokenizer/`` and ``text_encoder_2/`` + ``tokenizer_2/`` (CLIP), ``text_encoder_3/`` +
  ``tokenizer_3/`` (T5), ``vae/``). The VAE is loaded only when images are wanted.
* Latent size: the transformer's ``sample_size`` (128 for SD3 / SD3.5: 1024 px), what the pipeline
  generates by default; 16 channels.
* sigma_d = 0.5, as for Sana and FLUX: the flow latents (the VAE's, shifted by ``shift_factor`` and
  scaled by ``scaling_factor``) are TrigFlow's ``x0 / sigma_d``.
* Student folder: ``model.yaml`` (``family: sd3``; the teacher folder whose text encoders and VAE
  it uses), ``transformer/`` (diffusers ``save_pretrained`` of the student without its guidance
  input: a plain ``SD3Transformer2DModel``), ``guidance_embedder.safetensors`` (that input) and
  ``logvar_head.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ....errors import UserError, brief
from ...bundle import Bundle, ModelMeta, load_logvar_head, state_to_disk
from ...registry import pipeline_class_name
from ..common import latent_decoder, load_transformer, quiet_libraries, student_teacher_folder, torch_dtype
from .network import SD3_SIGMA_D, SD3VelocityNet, add_guidance_input, use_math_sdpa
from .text import SD3PromptEncoder

TIMESTEP_SCALE = 1000.0  # StableDiffusion3Pipeline feeds scheduler timesteps = sigma * num_train_timesteps
GUIDANCE_FILE = "guidance_embedder.safetensors"


def load_teacher(path: str | os.PathLike, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", time_multiplier: float | None = None) -> Bundle:
    """The teacher of an SD3 / SD3.5 pipeline folder."""
    quiet_libraries()
    path = Path(path)
    cls = pipeline_class_name(path)
    if time_multiplier not in (None, TIMESTEP_SCALE):
        raise UserError(f"teacher_time_multiplier={time_multiplier} does not apply to SD3 teachers: the transformer "
                        "takes the timestep as StableDiffusion3Pipeline feeds it (1000 tau); leave it unset")
    dt = torch_dtype(dtype)
    transformer = load_transformer(path / "transformer", "SD3Transformer2DModel", "SD3", dt).eval().requires_grad_(False)
    c = transformer.config
    if c.sample_size % c.patch_size:
        raise UserError(f"{path}/transformer/config.json has sample_size {c.sample_size}, not a multiple of its "
                        f"patch_size {c.patch_size}: fix sample_size there")
    network = SD3VelocityNet(transformer)
    encoder = SD3PromptEncoder(path, cache_dir=text_cache, dtype=dt)
    meta = ModelMeta(kind="teacher", sigma_d=SD3_SIGMA_D, channels=c.in_channels, image_size=c.sample_size,
                     network=network.config.to_dict(), prompt_encoder=encoder.config(),
                     timestep_scale=TIMESTEP_SCALE, blank_value=0.0, family="sd3",
                     extra={"pipeline": str(path.resolve()), "class": cls})
    return Bundle(meta, network, encoder, None, latent_decoder(path, SD3_SIGMA_D, "AutoencoderKL", "SD3"))


def write_folder(bundle: Bundle, folder: Path) -> None:
    """``transformer/`` without the guidance input (a plain ``SD3Transformer2DModel`` that diffusers
    loads) and the guidance input in ``guidance_embedder.safetensors``."""
    from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings

    transformer = bundle.network.transformer
    guided = transformer.time_text_embed
    with torch.device("meta"):
        plain = CombinedTimestepTextProjEmbeddings(1, 1)
    plain.timestep_embedder, plain.text_embedder = guided.timestep_embedder, guided.text_embedder
    transformer.time_text_embed = plain
    try:
        transformer.save_pretrained(str(Path(folder) / "transformer"), safe_serialization=True)
    finally:
        transformer.time_text_embed = guided
    save_file(state_to_disk(guided.guidance_embedder), str(Path(folder) / GUIDANCE_FILE))


def load_student(path: Path, meta: ModelMeta, dtype: str | torch.dtype | None = None,
                 text_cache: str | None = "default", **_) -> Bundle:
    """A student folder (see the module notes); text encoders and VAE from its teacher."""
    quiet_libraries()
    dt = torch_dtype(dtype)
    transformer = add_guidance_input(load_transformer(path / "transformer", "SD3Transformer2DModel", "SD3", dt))
    try:
        transformer.time_text_embed.guidance_embedder.load_state_dict(load_file(str(path / GUIDANCE_FILE)))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}/{GUIDANCE_FILE} is missing or does not fit the transformer ({brief(exc)}): pass "
                        "DIR/student of a `tbcm distill` run of an SD3 teacher") from None
    use_math_sdpa(transformer)
    teacher_folder = student_teacher_folder(path, meta)
    return Bundle(meta, SD3VelocityNet(transformer.eval()), SD3PromptEncoder(teacher_folder, cache_dir=text_cache),
                  load_logvar_head(path), latent_decoder(teacher_folder, meta.sigma_d, "AutoencoderKL", "SD3"))
