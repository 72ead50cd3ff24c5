"""The SD3 family's export (``tbcm export RUN --format diffusers --out DIR``): a ``StableDiffusion3Pipeline`` folder.

Guidance, folded.  A stock ``SD3Transformer2DModel`` has no guidance input; the student's time
embedding is ``temb = e_t(timestep) + e_g(1000 w) + e_text(pooled)``
(:class:`~tbcm.models.families.sd3.network` ``GuidedTimeTextEmbed``). For one fixed ``w`` the
guidance term is a constant vector ``c = e_g(1000 w)``, and ``e_t`` ends in a linear layer
(``timestep_embedder.linear_2``, with a bias, no activation after it), so
``temb = (e_t with linear_2.bias + c)(timestep) + e_text(pooled)``: the stock
``CombinedTimestepTextProjEmbeddings`` with one bias changed computes the student's ``temb`` for
that ``w`` (exact up to float rounding of one addition; ``temb`` reaches the blocks only through
their SiLU + linear modulations, which see the same vector). :func:`folded_time_text_embed` does it
for the sampler's ``cfg_scale``, fixed in the exported folder (``tbcm sample --cfg`` takes others).

The folder holds that transformer, the teacher's three text encoders, their tokenizers and VAE,
and the scheduler of :func:`tbcm.models.families.exporting.consistency_scheduler` (fresh noise, the
call's sigmas unshifted). The call (``tbcm_sampling.json`` ``call``, for 1, 2 and 4 steps):

* ``sigmas``: the flow times ``tau = sin t / (sin t + cos t)`` of the sampler's angles but the
  final 0, which the scheduler appends; the pipeline feeds ``timestep = 1000 sigma``, what
  :class:`~tbcm.models.families.sd3.network.SD3VelocityNet` is fed (SD3 bundles: ``timestep_scale = 1000``);
* ``guidance_scale = 1``: the pipeline runs CFG only above 1, and the guidance is in the weights;
* ``latents=``: the ``[B, 16, H, W]`` standard-normal noise; ``output_type="latent"`` returns the
  flow latents ``x0 / sigma_d`` (no VAE scaling or shift); ``height`` / ``width`` and
  ``max_sequence_length`` (the T5 length the student's conditions were encoded at).

Re-noising comes from torch's global generator (``StableDiffusion3Pipeline`` passes no
``generator`` to ``scheduler.step``); a student with ``sampler.fresh_noise < 1`` is noted as for FLUX.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ....errors import UserError
from ....sampler import StudentSampler
from ..exporting import (
    consistency_scheduler,
    export_note,
    flow_call_kwargs,
    fresh_noise_note,
    sampling_record,
    teacher_vae,
    text_parts,
    vae_scale_factor,
    write_pipeline,
)
from .network import has_guidance_input

NO_CFG = 1.0  # StableDiffusion3Pipeline.do_classifier_free_guidance is guidance_scale > 1


@torch.no_grad()
def folded_time_text_embed(guided: nn.Module, w: float) -> nn.Module:
    """A stock ``CombinedTimestepTextProjEmbeddings`` computing what the student's guided embedding
    ``guided`` computes at guidance input ``w``: its own timestep embedder (a copy) with
    ``e_g(1000 w)`` added to the bias of its last linear layer, and the same text embedder."""
    from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings

    last = guided.timestep_embedder.linear_2
    if last.bias is None or guided.timestep_embedder.post_act is not None:
        raise UserError("this SD3 transformer's timestep embedder does not end in a linear layer with a bias, so the "
                        "guidance input cannot be folded into it: generate with `tbcm sample`")
    dtype = last.weight.dtype
    g = torch.full((1,), float(w) * 1000, dtype=torch.float32, device=last.weight.device)
    constant = guided.guidance_embedder(guided.time_proj(g).to(dtype))[0]  # as GuidedTimeTextEmbed computes it
    with torch.device("meta"):
        plain = CombinedTimestepTextProjEmbeddings(1, 1)
    plain.timestep_embedder = copy.deepcopy(guided.timestep_embedder)
    plain.timestep_embedder.linear_2.bias.add_(constant)
    plain.text_embedder = guided.text_embedder
    return plain


def pipeline_call_kwargs(steps: int, sampler: StudentSampler, pixels: int, max_sequence_length: int) -> dict:
    """``StableDiffusion3Pipeline.__call__`` arguments for ``steps`` steps of ``sampler`` on
    ``pixels``-square images (the guidance input is in the exported weights: no CFG)."""
    return flow_call_kwargs(steps, sampler, guidance_scale=NO_CFG, height=pixels, width=pixels,
                            max_sequence_length=max_sequence_length)


def export_pipeline(bundle, folder: Path, out: Path) -> str:
    """Write a ``StableDiffusion3Pipeline`` for the SD3 student ``bundle`` into ``folder`` (renamed to
    ``out`` once complete), its guidance input folded in at the sampler's ``cfg_scale``; returns how to load it."""
    from diffusers import StableDiffusion3Pipeline

    transformer = bundle.network.transformer
    if not has_guidance_input(transformer):
        raise UserError("this SD3 transformer has no guidance input, so it is not a tbcm student: pass DIR/student of "
                        "a `tbcm distill` run of an SD3 teacher")
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    vae = teacher_vae(bundle, "AutoencoderKL")
    pixels = bundle.meta.image_size * vae_scale_factor(vae)
    length = bundle.encoder.max_sequence_length
    notes = [f"the transformer carries the guidance input w={sampler.cfg_scale:g} in its time embedding (folded "
             "exactly), fixed in this folder (tbcm sample --cfg takes others); guidance_scale=1 keeps the pipeline "
             "from running CFG",
             *fresh_noise_note(sampler, "FlowMatchEulerDiscreteScheduler")]
    record = sampling_record(sampler, "StableDiffusion3Pipeline",
                             lambda n: pipeline_call_kwargs(n, sampler, pixels, length), sampler.angles,
                             guidance_scale=NO_CFG, notes=notes)
    guided = transformer.time_text_embed
    transformer.time_text_embed = folded_time_text_embed(guided, sampler.cfg_scale)
    try:  # attention processors are not saved: the pipeline uses its own
        pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=consistency_scheduler(), vae=vae,
                                        **text_parts(bundle.encoder))
        write_pipeline(pipe, folder, record)
    finally:
        transformer.time_text_embed = guided
    return export_note(record, out)
