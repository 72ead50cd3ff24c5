"""The FLUX family: ``FluxPipeline`` folders whose transformer has no guidance embedding
(FLUX.1-schnell-like) as teachers, students as ``FluxTransformer2DModel`` with one, exported as
``FluxPipeline`` folders with a fresh-noise ``FlowMatchEulerDiscreteScheduler``."""

from __future__ import annotations

from ...family import Family
from ..common import blank_latent, write_transformer_folder
from .bundle import load_student, load_teacher
from .export import export_pipeline

FAMILY = Family(
    name="flux", load_folder=load_student, write_folder=write_transformer_folder, pipeline_prefixes=("Flux",),
    load_pipeline=load_teacher, export=export_pipeline,
    blank_latent=lambda meta, shape: blank_latent(meta.extra["pipeline"], shape, "AutoencoderKL", "FLUX"))
