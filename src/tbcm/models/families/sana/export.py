"""The Sana family's export (``tbcm export RUN --format diffusers --out DIR``): a ``SanaSprintPipeline`` folder.

The folder holds the student transformer (``guidance_embeds=True``, dense time input), the
teacher's text encoder, tokenizer and DC-AE, and an ``SCMScheduler`` with the student's
``sigma_data``, so ``SanaSprintPipeline.from_pretrained(DIR)`` generates with it (:func:`tbcm.export.export_diffusers`
writes it atomically).

Step counts. ``SCMScheduler`` takes ``intermediate_timesteps`` only for 2 steps (it must be
``None`` otherwise, or the call fails) and spaces angles evenly from ``max_timesteps`` for any
other count; custom ``timesteps`` cannot be passed through ``SanaSprintPipeline.__call__`` in
diffusers 0.42 (``retrieve_timesteps`` omits ``num_inference_steps``, which
``SCMScheduler.set_timesteps`` requires). So :func:`pipeline_call_kwargs` gives, per step count:
1 step ``[pi/2, 0]``; 2 steps the student sampler's own middle angle
(:meth:`tbcm.sampler.StudentSampler.angles`: its explicit 2-step route if it has one, else
``arctan(shift)``); other counts the pipeline's even spacing (``linspace(pi/2, 0, n + 1)``, not
tbcm's shifted route -- ``tbcm sample`` uses the shifted route, or an explicit route saved with
``sampler.routes``). ``tbcm_sampling.json`` in the exported folder lists them for 1, 2 and
4 steps with the angles each one runs (``angles``) beside the angles ``tbcm sample`` runs
(``tbcm_angles``), and the student's sampler (``sampler``).

Re-noising. ``SCMScheduler`` re-noises between steps with fresh noise. A student saved with
``sampler.fresh_noise < 1`` (part of the noise its state implies, tbcm's sampler) makes
different 2- and 4-step images in ``tbcm sample`` than in the pipeline; the export says so and
``tbcm_sampling.json`` records both (Sana configs keep 1, the pipeline's) and says so in its ``notes``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ....errors import UserError
from ....sampler import StudentSampler
from ..exporting import COUNTS, SAMPLING_FILE, export_note, fresh_noise_note, teacher_vae, write_pipeline
from ..exporting import sampling_record as shared_record


def pipeline_call_kwargs(steps: int, sampler: StudentSampler | None = None) -> dict:
    """``SanaSprintPipeline.__call__`` arguments for ``steps`` steps of ``sampler`` (default: a
    :class:`~tbcm.sampler.StudentSampler` of shift 2.5); see the module notes. ``intermediate_timesteps``
    is the sampler's own 2-step middle angle (radians), ``None`` at other counts."""
    if steps < 1:
        raise UserError(f"steps must be >= 1 (got {steps})")
    intermediate = float((sampler or StudentSampler()).angles(2)[1]) if steps == 2 else None
    return {"num_inference_steps": steps, "max_timesteps": math.pi / 2, "intermediate_timesteps": intermediate}


def pipeline_angles(steps: int, sampler: StudentSampler | None = None) -> list[float]:
    """The ``steps + 1`` angles (radians, pi/2 .. 0) ``SanaSprintPipeline`` runs with :func:`pipeline_call_kwargs`."""
    if steps == 2:
        return [math.pi / 2, float((sampler or StudentSampler()).angles(2)[1]), 0.0]
    return [math.pi / 2 * (1 - i / steps) for i in range(steps + 1)]


def sampling_record(sampler: StudentSampler, counts: tuple[int, ...] = COUNTS) -> dict:
    """What ``tbcm_sampling.json`` holds for a student sampled by ``sampler``
    (:func:`tbcm.models.families.exporting.sampling_record`): the guidance input is the pipeline's
    ``guidance_scale``; ``notes`` says where the pipeline's images differ from ``tbcm sample``'s
    (re-noising with ``fresh_noise < 1``; other angles at 2 or 4 steps)."""
    notes = fresh_noise_note(sampler, "SCMScheduler")
    if other := [str(n) for n in (2, 4) if n in counts and pipeline_angles(n, sampler) != sampler.angles(n)]:
        notes.append(f"at {' and '.join(other)} steps the pipeline runs other angles than tbcm sample "
                     f"({SAMPLING_FILE}: angles, tbcm_angles)")
    return shared_record(sampler, "SanaSprintPipeline", lambda n: pipeline_call_kwargs(n, sampler),
                         lambda n: pipeline_angles(n, sampler), guidance_scale=sampler.cfg_scale, notes=notes,
                         counts=counts)


def export_pipeline(bundle, folder: Path, out: Path) -> str:
    """Write a ``SanaSprintPipeline`` for the Sana student ``bundle`` into ``folder`` (renamed to
    ``out`` once complete); returns how to load it."""
    from diffusers import SanaSprintPipeline, SCMScheduler

    vae = teacher_vae(bundle, "AutoencoderDC")
    transformer = bundle.network.transformer  # attention processors are not saved: the pipeline uses its own
    pipe = SanaSprintPipeline(tokenizer=bundle.encoder.tokenizer, text_encoder=bundle.encoder.text_encoder,
                              vae=vae, transformer=transformer,
                              scheduler=SCMScheduler(sigma_data=bundle.meta.sigma_d, prediction_type="trigflow"))
    record = sampling_record(StudentSampler.from_extra(bundle.meta.extra))
    write_pipeline(pipe, folder, record)
    return export_note(record, out)
