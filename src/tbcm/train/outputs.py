"""What a run leaves behind: the student folder (weights, prompt encoder, its sampler) and the
sample grids (teacher beside the student at each preview step count)."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

from ..evaluation.spectrum import pixel_patch
from ..grids import grid_image, panels, save_png
from ..models import lora
from ..models.bundle import Bundle, ModelMeta, save_bundle
from ..models.student import Student
from ..previews import student_samples, teacher_samples
from ..sampler import StudentSampler


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's max RSS (Linux: KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def student_sampler(cfg) -> StudentSampler:
    """The few-step sampler a run saves with its student: ``sampler.*`` and what it was distilled
    from (guidance range and interval, the rollouts' route)."""
    s = cfg.sampler
    return StudentSampler(cfg_scale=s.cfg_scale, shift=s.shift, fresh_noise=s.fresh_noise,
                          routes={len(m) + 1: list(m) for m in s.routes}, cfg_scales=list(cfg.cfg_scales),
                          guidance_interval=list(cfg.guidance_interval), teacher_route_points=cfg.pairs.route_points,
                          teacher_route_shift=cfg.pairs.shift)


def student_for_sampling(tr) -> Student:
    """An unsharded CPU copy of the student holding the EMA weights. Collective under FSDP2."""
    ema_state = tr.ema.full_state_dict()
    meta = tr.teacher_bundle.meta
    student = Student(lora.copy_network(tr.student_template), meta.sigma_d, meta.timestep_scale)
    # the EMA averages parameters; buffers (SD3's fixed position table) stay the template's
    student.load_state_dict({**student.state_dict(), **ema_state})
    return student.eval()


def save_student(tr, student: Student, path: Path) -> Path:
    tmeta = tr.teacher_bundle.meta
    meta = ModelMeta(
        kind="student", sigma_d=tmeta.sigma_d, channels=tmeta.channels, image_size=tmeta.image_size,
        network=student.network.config.to_dict(), prompt_encoder=tr.encoder.config(),
        timestep_scale=tmeta.timestep_scale, blank_value=tmeta.blank_value, family=tmeta.family,
        lora=lora.record(student.network, tr.cfg),
        extra={"teacher": str(tr.cfg.teacher), "steps": tr.step, "skipped_steps": tr.skipped,
               "sampler": tr.sampler.to_dict()},
    )
    return save_bundle(Bundle(meta, student.network, tr.encoder, student.logvar_head), path)


def tune_student_sampler(tr, student: Student, out: Path, progress: bool = True) -> StudentSampler:
    """Choose the saved student's sampler by its fidelity to the teacher on tune noise
    (:func:`tbcm.sampler_tuning.tune_models`, ``sampler.tune_images`` images, on the training
    device), save it with the student and ``out/sampler_tuning.json``; returns it."""
    from ..sampler_tuning import SearchSpace, save_tuning, tune_models

    batch = 128 if tr.teacher_bundle.decode is None else 16
    space = SearchSpace(fresh_noise=tuple(tr.cfg.sampler.tune_fresh_noise))
    result, record = tune_models(student.to(tr.device), tr.encoder, tr.teacher, tr.prompts, tr.sampler,
                                 tr.image_shape, space, images=tr.cfg.sampler.tune_images, device=tr.device,
                                 batch=batch, progress=progress)
    save_tuning(out / "student", out, result, {**record, "teacher": str(tr.cfg.teacher)})
    return result.sampler


@torch.no_grad()
def grid_panels(tr, student: Student) -> list[tuple[str, torch.Tensor]]:
    """The titled panels: teacher (guided, ``preview.teacher_steps`` on the rollouts' shift) beside
    the student at each ``preview.student_steps`` with its saved sampler; same prompts, same seeds.
    Uses only its own seeded generators: the training RNG streams (and an exact resume) are untouched."""
    p, prompts, sampler = tr.cfg.preview, tr.grid_prompts, tr.sampler
    rows = len(prompts)
    # On the training device: a real teacher's 16-step grids would take hours on a CPU.
    teacher, decode = tr.teacher, tr.teacher_bundle.decode
    student = student.to(tr.device)
    reference = teacher_samples(teacher, prompts, sampler.cfg_scale, p.teacher_steps, p.seeds, tr.cfg.pairs.shift,
                                decode=decode)
    named = [(f"teacher {p.teacher_steps} steps\nspectrum: student/teacher", grid_image(reference, rows))]
    for n in p.student_steps:
        pixels = student_samples(student, tr.encoder, prompts, sampler, n, p.seeds, decode=decode)
        named.append((f"student {n} step{'s' if n > 1 else ''}\n"
                      f"{spectrum_caption(pixels, reference, pixel_patch(tr.teacher_bundle.meta))}",
                      grid_image(pixels, rows)))
    return named


def spectrum_caption(pixels: torch.Tensor, reference: torch.Tensor, patch: int | None = None) -> str:
    """``"spectrum 0.98 1.02 1.10 1.31 blocks 1.15"``: the power of ``pixels`` over ``reference``'s
    (``[N, C, H, W]``) in four frequency bands, low to high (:func:`tbcm.evaluation.spectrum.spectrum_ratio`;
    > 1 in the high bands: speckle, < 1: blur) and, given the network's ``patch`` in pixels, the
    :func:`~tbcm.evaluation.spectrum.block_ratio` on its grid. On the grid's few images: a glance."""
    from ..evaluation.spectrum import block_ratio, spectrum_ratio

    pixels, reference = pixels.float().cpu(), reference.float().cpu()
    text = "spectrum " + " ".join("-" if r != r else f"{r:.2f}" for r in spectrum_ratio(pixels, reference))
    return text if patch is None else f"{text} blocks {block_ratio(pixels, reference, patch):.2f}"


def save_grids(tr, student: Student, folder: Path) -> None:
    """``samples.png`` (all panels) and ``samples_<panel>.png`` in ``folder``."""
    named = grid_panels(tr, student)
    for title, im in named:  # the file is named by the title's first line (the caption is the grid's)
        save_png(im, folder / f"samples_{title.splitlines()[0].replace(' ', '_')}.png")
    save_png(panels(named), folder / "samples.png")


def save_progress_grid(tr, out: Path, log) -> None:
    """``out/samples/step_N.png`` of the EMA student now (and into TensorBoard when installed).
    Collective under FSDP2 (the EMA is gathered); rank 0 writes."""
    student = student_for_sampling(tr)
    if not tr.dist.is_main:
        return
    image = panels(grid_panels(tr, student))
    save_png(image, out / "samples" / f"step_{tr.step:08d}.png")
    if log is not None:
        log.add_image("samples", image, tr.step)
