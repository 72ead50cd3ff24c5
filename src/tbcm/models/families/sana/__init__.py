"""The Sana family: ``SanaPipeline`` / ``SanaSprintPipeline`` folders as teachers, students as
``SanaTransformer2DModel`` with a guidance embedding, exported as ``SanaSprintPipeline`` folders."""

from __future__ import annotations

from ...family import Family
from ..common import blank_latent, write_transformer_folder
from .bundle import load_student, load_teacher
from .export import export_pipeline

# guidance: SanaPipeline.__call__'s default guidance_scale, the scale its teachers are sampled at
FAMILY = Family(
    name="sana", load_folder=load_student, write_folder=write_transformer_folder, pipeline_prefixes=("Sana",),
    load_pipeline=load_teacher, export=export_pipeline, guidance=4.5,
    blank_latent=lambda meta, shape: blank_latent(meta.extra["pipeline"], shape, "AutoencoderDC", "Sana"))
