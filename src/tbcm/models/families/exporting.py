"""What the diffusers families' exports share: ``tbcm_sampling.json``, the flow-matching scheduler
that runs a consistency student, the teacher parts an exported folder copies, the returned note.

A consistency student in a flow-matching pipeline.  tbcm's few-step sampler
(:func:`tbcm.sampling.student_sample`, fresh noise) predicts ``x0`` at each angle of its route and
re-noises to the next one. In flow units (``tau = sin t / (sin t + cos t)``, ``x0 = sigma_d x0_flow``)
that is, for the flow velocity ``v`` the student's network returns at ``x_tau``,
``x0_flow = x_tau - tau v`` and ``x_tau' = (1 - tau') x0_flow + tau' n`` with fresh ``n`` -- which is
exactly ``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)``'s step with ``sigma = tau``.
:func:`consistency_scheduler` is that scheduler with ``shift=1`` and no dynamic shifting, so the
``sigmas`` a call passes (:func:`flow_sigmas`: the flow times of the route's angles but the last
0, which the scheduler appends) are run as given: ``FluxPipeline`` always computes a resolution
``mu``, but ``set_timesteps`` uses it only with ``use_dynamic_shifting``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from ...errors import UserError, brief
from ...sampler import StudentSampler

SAMPLING_FILE = "tbcm_sampling.json"
COUNTS = (1, 2, 4)


def flow_sigmas(angles: list[float]) -> list[float]:
    """The flow times ``tau = sin t / (sin t + cos t)`` of ``angles`` (radians, pi/2 .. 0) but the
    last (0): the ``sigmas`` a ``FlowMatchEulerDiscreteScheduler`` pipeline call takes (pi/2 gives
    exactly 1: ``cos(pi/2)`` is below half an ulp of 1)."""
    return [math.sin(a) / (math.sin(a) + math.cos(a)) for a in angles[:-1]]


def consistency_scheduler():
    """``FlowMatchEulerDiscreteScheduler`` re-noising with fresh noise (``stochastic_sampling``) and
    running the call's ``sigmas`` unshifted (``shift=1``, no dynamic shifting, terminal 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False,
                                           stochastic_sampling=True)


def flow_call_kwargs(steps: int, sampler: StudentSampler, **fixed) -> dict:
    """A flow-matching pipeline's call arguments for ``steps`` steps of ``sampler``'s route
    (:meth:`~tbcm.sampler.StudentSampler.angles`: its explicit route for that count, else its
    shifted one), plus the ``fixed`` arguments (guidance scale, size, sequence length)."""
    return {"num_inference_steps": int(steps), "sigmas": flow_sigmas(sampler.angles(steps)), **fixed}


def fresh_noise_note(sampler: StudentSampler, scheduler: str) -> list[str]:
    """The note on a student that re-noises with ``fresh_noise < 1`` (none at 1)."""
    if sampler.fresh_noise == 1.0:
        return []
    return [f"this student re-noises with fresh_noise={sampler.fresh_noise:g} in tbcm sample, the pipeline's "
            f"{scheduler} with fresh noise only (it has no share of the implied noise), so its 2- and 4-step "
            "images differ from tbcm sample's (1 step is the same)"]


def sampling_record(sampler: StudentSampler, pipeline: str, call: Callable[[int], dict],
                    angles: Callable[[int], list[float]], guidance_scale: float, notes: list[str] = (),
                    counts: tuple[int, ...] = COUNTS) -> dict:
    """What ``tbcm_sampling.json`` holds: the pipeline class (``pipeline``), the ``guidance_scale``
    argument to pass it beside the guidance input the student receives (``guidance_input``, the
    sampler's ``cfg_scale``), both re-noising shares, the call arguments (``call``) and the angles
    they run (``angles``, radians) beside the angles ``tbcm sample`` runs (``tbcm_angles``) per step
    count, where the two differ (``notes``), and the sampler itself (``sampler``)."""
    return {"pipeline": pipeline, "guidance_scale": float(guidance_scale), "guidance_input": sampler.cfg_scale,
            "fresh_noise": sampler.fresh_noise, "pipeline_fresh_noise": 1.0,
            "call": {str(n): call(n) for n in counts},
            "angles": {str(n): angles(n) for n in counts},
            "tbcm_angles": {str(n): sampler.angles(n) for n in counts},
            "notes": list(notes), "sampler": sampler.to_dict()}


def write_pipeline(pipe, folder: Path, record: dict) -> None:
    """``pipe.save_pretrained(folder)`` (safetensors) and ``folder/tbcm_sampling.json``."""
    pipe.save_pretrained(str(folder), safe_serialization=True)
    (Path(folder) / SAMPLING_FILE).write_text(json.dumps(record, indent=2) + "\n")


def export_note(record: dict, out: Path) -> str:
    """The one line ``tbcm export`` prints: how to load the folder, where the call arguments are,
    and every note of the record."""
    notes = "".join(f"; note: {n}" for n in record["notes"])
    return (f"load it with diffusers.{record['pipeline']}.from_pretrained({str(out)!r}); "
            f"{Path(out) / SAMPLING_FILE} has the call arguments for 1, 2 and 4 steps{notes}")


def teacher_vae(bundle, class_name: str):
    """The VAE of the teacher folder the student takes its text encoders from (the export copies it)."""
    import diffusers

    folder = Path(bundle.meta.prompt_encoder["folder"])
    try:
        return getattr(diffusers, class_name).from_pretrained(str(folder / "vae"), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load the VAE of the teacher folder {folder} ({brief(exc)}): the export "
                        "copies it; restore the teacher folder") from None


def vae_scale_factor(vae) -> int:
    """Pixels per latent, as ``FluxPipeline`` / ``StableDiffusion3Pipeline`` compute it."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def text_parts(encoder) -> dict:
    """The tokenizers and text encoders of a FLUX / SD3 prompt encoder, by their pipeline names: the
    very modules (and the tokenizers as loaded) the student's conditions were encoded with. The
    encoder holds them in its text-only pipeline (``encoder._pipe``, whose ``encode_prompt`` it runs)."""
    return {k: v for k, v in encoder._pipe.components.items() if k.startswith(("tokenizer", "text_encoder"))}
