"""The FLUX family's export (``tbcm export RUN --format diffusers --out DIR``): a ``FluxPipeline`` folder.

The folder holds the student transformer (a stock ``FluxTransformer2DModel`` with
``guidance_embeds=True``), the teacher's CLIP and T5 text encoders, their tokenizers and VAE, and
a ``FlowMatchEulerDiscreteScheduler`` that runs the student's consistency sampler
(:func:`tbcm.models.families.exporting.consistency_scheduler`: fresh noise, the call's sigmas
unshifted). ``FluxPipeline.from_pretrained(DIR)`` generates with it.

The mapping, step by step (``tbcm_sampling.json`` ``call`` holds the arguments for 1, 2 and 4 steps):

* ``sigmas``: the flow times ``tau = sin t / (sin t + cos t)`` of the student sampler's angles
  (:meth:`tbcm.sampler.StudentSampler.angles`: its explicit route for the count, else its shifted
  route) but the final 0, which the scheduler appends: every count runs tbcm's own angles.
* time input: the scheduler's timesteps are ``1000 sigma``; ``FluxPipeline`` feeds
  ``timestep / 1000 = tau`` and the transformer multiplies by 1000 -- what
  :class:`~tbcm.models.families.flux.network.FluxVelocityNet` feeds it (``1000 tau``, fp32).
* guidance input: ``FluxPipeline`` feeds ``guidance_scale`` (fp32) to a transformer with
  ``guidance_embeds``, which scales it by 1000 -- what the student is fed as ``w``; so
  ``guidance_scale`` is the sampler's ``cfg_scale`` (no CFG: ``true_cfg_scale`` stays 1).
* latents: ``latents=`` are the packed ``[B, (H/2)(W/2), 4C]`` standard-normal noise
  (``FluxPipeline._pack_latents``, tbcm's ``pack_latents``); ``output_type="latent"`` returns the packed
  flow latents ``x0 / sigma_d`` (no VAE scaling or shift), ``FluxPipeline._unpack_latents`` gives
  ``[B, C, H, W]``. ``height`` / ``width`` are the student's latent size in pixels and
  ``max_sequence_length`` the T5 length its conditions were encoded at.

Re-noising. ``FluxPipeline`` passes no ``generator`` to ``scheduler.step``: the fresh noise of 2 and
more steps comes from torch's global generator (seed it with ``torch.manual_seed``), drawn in the
packed layout. A student saved with ``sampler.fresh_noise < 1`` keeps part of the noise its state
implies in ``tbcm sample``; the scheduler cannot, so the export says so (note and ``notes``).
"""

from __future__ import annotations

from pathlib import Path

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


def pipeline_call_kwargs(steps: int, sampler: StudentSampler, pixels: int, max_sequence_length: int) -> dict:
    """``FluxPipeline.__call__`` arguments for ``steps`` steps of ``sampler`` on ``pixels``-square images."""
    return flow_call_kwargs(steps, sampler, guidance_scale=sampler.cfg_scale, height=pixels, width=pixels,
                            max_sequence_length=max_sequence_length)


def export_pipeline(bundle, folder: Path, out: Path) -> str:
    """Write a ``FluxPipeline`` for the FLUX student ``bundle`` into ``folder`` (renamed to ``out``
    once complete); returns how to load it."""
    from diffusers import FluxPipeline

    transformer = bundle.network.transformer  # attention processors are not saved: the pipeline uses its own
    if not transformer.config.guidance_embeds:
        raise UserError("this FLUX transformer has no guidance embedding, so it is not a tbcm student: pass "
                        "DIR/student of a `tbcm distill` run of a FLUX teacher")
    vae = teacher_vae(bundle, "AutoencoderKL")
    pixels = bundle.meta.image_size * vae_scale_factor(vae)
    pipe = FluxPipeline(scheduler=consistency_scheduler(), vae=vae, transformer=transformer,
                        **text_parts(bundle.encoder))
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    length = bundle.encoder.max_sequence_length
    record = sampling_record(sampler, "FluxPipeline", lambda n: pipeline_call_kwargs(n, sampler, pixels, length),
                             sampler.angles, guidance_scale=sampler.cfg_scale,
                             notes=fresh_noise_note(sampler, "FlowMatchEulerDiscreteScheduler"))
    write_pipeline(pipe, folder, record)
    return export_note(record, out)
