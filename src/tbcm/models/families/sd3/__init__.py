"""The Stable Diffusion 3 / 3.5 family: ``StableDiffusion3Pipeline`` folders as teachers (true CFG
against the empty prompt), students as ``SD3Transformer2DModel`` with a zero-initialised guidance
input, exported as ``StableDiffusion3Pipeline`` folders with that input folded into the time
embedding at the sampler's guidance scale."""

from __future__ import annotations

from ...family import Family
from ..common import blank_latent
from .bundle import load_student, load_teacher, write_folder
from .export import export_pipeline

# guidance: StableDiffusion3Pipeline.__call__'s default guidance_scale, the scale its teachers are sampled at
FAMILY = Family(
    name="sd3", load_folder=load_student, write_folder=write_folder, pipeline_prefixes=("StableDiffusion3",),
    load_pipeline=load_teacher, export=export_pipeline, guidance=7.0,
    blank_latent=lambda meta, shape: blank_latent(meta.extra["pipeline"], shape, "AutoencoderKL", "SD3"))
