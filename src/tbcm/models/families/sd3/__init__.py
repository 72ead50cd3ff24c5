"""The Stable Diffusion 3 / 3.5 family: ``StableDiffusion3Pipeline`` folders as teachers (true CFG
against the empty prompt), students as ``SD3Transformer2DModel`` with a zero-initialised guidance
input. No diffusers pipeline runs such a student: ``tbcm sample`` / :mod:`tbcm.generate` do."""

from __future__ import annotations

from ...family import Family
from ..common import blank_latent
from .bundle import load_student, load_teacher, write_folder

FAMILY = Family(
    name="sd3", load_folder=load_student, write_folder=write_folder, pipeline_prefixes=("StableDiffusion3",),
    load_pipeline=load_teacher,
    blank_latent=lambda meta, shape: blank_latent(meta.extra["pipeline"], shape, "AutoencoderKL", "SD3"),
    no_export="no diffusers pipeline runs an SD3 consistency student (StableDiffusion3Pipeline integrates a "
              "velocity with CFG; the student predicts TrigFlow F from the guidance scale): generate with "
              "`tbcm sample --student RUN --prompt ... --out x.png` or tbcm.generate.load_image_generator")
