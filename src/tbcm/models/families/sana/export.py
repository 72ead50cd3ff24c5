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
``tbcm_sampling.json`` records both (Sana configs keep 1, the pipeline's).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ....errors import UserError, brief
from ....sampler import StudentSampler


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


def sampling_record(sampler: StudentSampler, counts: tuple[int, ...] = (1, 2, 4)) -> dict:
    """What ``tbcm_sampling.json`` holds for a student sampled by ``sampler``: the guidance input
    (``guidance_scale``), the pipeline's call arguments (``call``) and the angles they run
    (``angles``, radians) beside the angles ``tbcm sample`` runs (``tbcm_angles``) per step count,
    both re-noising shares, and the sampler itself (``sampler``: :meth:`~tbcm.sampler.StudentSampler.to_dict`)."""
    return {"guidance_scale": sampler.cfg_scale,
            # SCMScheduler re-noises with fresh noise only: with fresh_noise < 1, tbcm sample's
            # multi-step images differ from the pipeline's (1 step is the same)
            "fresh_noise": sampler.fresh_noise, "pipeline_fresh_noise": 1.0,
            "call": {str(n): pipeline_call_kwargs(n, sampler) for n in counts},
            "angles": {str(n): pipeline_angles(n, sampler) for n in counts},
            "tbcm_angles": {str(n): sampler.angles(n) for n in counts},
            "sampler": sampler.to_dict()}


def export_pipeline(bundle, folder: Path, out: Path) -> str:
    """Write a ``SanaSprintPipeline`` for the Sana student ``bundle`` into ``folder`` (renamed to
    ``out`` once complete); returns how to load it."""
    from diffusers import AutoencoderDC, SanaSprintPipeline, SCMScheduler

    teacher_folder = Path(bundle.meta.prompt_encoder["folder"])
    try:
        vae = AutoencoderDC.from_pretrained(str(teacher_folder / "vae"), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load the VAE of the teacher folder {teacher_folder} ({brief(exc)}): the export "
                        "copies it; restore the teacher folder") from None
    transformer = bundle.network.transformer  # attention processors are not saved: the pipeline uses its own
    pipe = SanaSprintPipeline(tokenizer=bundle.encoder.tokenizer, text_encoder=bundle.encoder.text_encoder,
                              vae=vae, transformer=transformer,
                              scheduler=SCMScheduler(sigma_data=bundle.meta.sigma_d, prediction_type="trigflow"))
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    sampling = sampling_record(sampler)
    fresh = sampler.fresh_noise
    pipe.save_pretrained(str(folder), safe_serialization=True)
    (Path(folder) / "tbcm_sampling.json").write_text(json.dumps(sampling, indent=2) + "\n")
    differs = "" if fresh == 1.0 else (
        f"; note: this student re-noises with fresh_noise={fresh:g} in tbcm sample, the pipeline's SCMScheduler "
        "with fresh noise only, so its 2- and 4-step images differ from tbcm sample's (1 step is the same)")
    if other := [n for n in ("2", "4") if sampling["angles"][n] != sampling["tbcm_angles"][n]]:
        differs += (f"; note: at {' and '.join(other)} steps the pipeline runs other angles than tbcm sample "
                    "(tbcm_sampling.json: angles, tbcm_angles)")
    return (f"load it with diffusers.SanaSprintPipeline.from_pretrained({str(out)!r}); "
            f"{Path(out) / 'tbcm_sampling.json'} has the call arguments for 1, 2 and 4 steps{differs}")
