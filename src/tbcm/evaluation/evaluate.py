"""``tbcm eval``: FID and prompt adherence of a distilled student, its teacher as the student copies
it and at its best, fidelity to that teacher, and the data floor.  The kind of model picks the
suite: 1x8x8 images are digits (below), 3x32x32 images are scenes (:mod:`tbcm.scenes.evaluate`:
seen and held-out prompts, the scenes judge); any other student (Sana, FLUX, SD3) gets the
data-free fidelity measures alone (``fidelity=True``) on prompts from a file.

Images.  ``n`` images per prompt (digits: ``"a handwritten digit D"``, D = 0..9), image ``j`` of
prompt ``i`` seeded ``seed + i n + j`` (:class:`tbcm.evaluation.draws.ImageDraw`): its initial noise
and a few-step student's re-noising, as ``tbcm sample --seed`` does. Teacher and student start from
the same noise, every image is independent (as FID assumes), and batching changes nothing. The seed
comes from ``--seed`` or from a split's draw (``--split tune|confirm --draw K``,
:mod:`tbcm.evaluation.splits`): choose on tune, report confirm. FID on 100 images per digit moves by
1 to 1.3 points (sd) from one draw to another: compare on many draws.

FID compares the judge's features of the generated images with real images the judge and the
FID reference never trained on (digits: the 600 held-out digits); adherence is the share the judge
assigns to what was asked. The **data floor** is the FID of real training images against the same
reference with as many images as the generated set: no model can be expected below it.

The student samples through its :class:`~tbcm.sampler.StudentSampler` (saved with it; the CLI's
``--cfg``, ``--shift``, ``--fresh-noise``, ``--routes`` override it). The teacher always runs the
route family of the student's training rollouts (:mod:`tbcm.evaluation.teachers`): as copied (the
rollouts' route, guidance interval and guidance) and at its best over step count, route shift,
guidance scale and interval, chosen on a tune draw. Student FID / teacher FID against both;
the headline is against the teacher at its best.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from tqdm import tqdm

from ..errors import UserError
from ..models.adapter import valid_interval
from ..models.bundle import Bundle, load_bundle
from ..models.student import Student
from ..models.teacher import Teacher
from ..sampler import StudentSampler
from ..sampling import to_pixels
from .classifier import DigitClassifier
from .draws import Encodings, ImageDraw, sample_draw, student_fn, teacher_fn
from .fidelity import frechet_between, judged_error, latent_error
from .spectrum import block_ratio, pixel_patch, spectrum_ratio
from .splits import check_draw_size, draw_seed, split_of_seed
from .teachers import TeacherGrid, TeacherSetting, copied_setting

# the suites, the run folder and the table live beside this module; re-exported here
from .digits import PROMPTS, DigitsSuite, _suite_class  # noqa: F401
from .runs import find_student, run_prompts, run_teacher  # noqa: F401
from .table import format_table  # noqa: F401


def _check_counts(name: str, values: list[int]) -> None:
    if not values or any(v < 1 for v in values):
        raise UserError(f"{name} must be whole numbers >= 1 (got {values}): e.g. {name} 1,2,4")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when there is one, else the CPU. Raises :class:`UserError` for
    ``"cuda"`` without one."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA device: pass --device cpu (or auto)")
    return device


def _resolve_seed(seed: int | None, split: str | None, draw: int | None) -> int:
    if split is None:
        if draw is not None:
            raise UserError("--draw picks a draw of a split: add --split tune or --split confirm")
        return 0 if seed is None else int(seed)
    if seed is not None:
        raise UserError("--seed and --split both choose the images: pass one of them")
    return draw_seed(split, 0 if draw is None else draw)


@torch.no_grad()
def evaluate(path: str | os.PathLike, student_steps: list[int] = (1, 2, 4), n_per_class: int | None = None,
             teacher_steps: list[int] = (), cfg_scale: float | None = None, seed: int | None = None,
             classifier: DigitClassifier | None = None, teacher_cfgs: list[float] = (),  # or a SceneJudge
             student_cfgs: list[float] | None = None, fresh_noise: float | None = None,
             student_shift: float | None = None, teacher_interval: list[float] | None = None,
             student_routes: dict | None = None, *, teacher_copied: bool = False,
             teacher_best: TeacherGrid | None = None, fidelity: bool = False, split: str | None = None,
             draw: int | None = None, prompts: list[str] | None = None, inception=None, batch: int | None = None,
             device: str | torch.device | None = "cpu", progress: bool = False, judged: bool = True,
             teacher_samples: dict | None = None) -> dict:
    """Scores of the student in ``path`` (a run folder or a student folder) and of its teacher (the
    run's ``config.yaml`` ``teacher``, else builtin).

    Always: ``{"student": {"1": {"fid", "adherence"}, ...}, "teacher": {...}, "data_floor", "sampler",
    "n_per_class", "cfg_scale", "seed", "split", "draw", "teacher_model", "reference", "suite", ...}``.
    ``n_per_class``: images per digit / scenes prompt / prompt (default 100 / 32 / 1). ``cfg_scale``
    (default: the sampler's) is the student's guidance input and the teacher's guidance scale: the
    same-guidance comparison. ``seed`` (default 0) or ``split`` / ``draw`` (:mod:`.splits`) pick the images.

    Student sampler: ``cfg_scale``, ``student_shift``, ``fresh_noise``, ``student_routes`` override
    the :class:`~tbcm.sampler.StudentSampler` saved with the student
    (:meth:`~tbcm.sampler.StudentSampler.overridden`); ``student_cfgs`` sweeps its guidance input at
    every step count (``"student_sweep"``, ``"student_best"``; default with ``teacher_cfgs``: the
    scales it was trained on).

    Teacher (every teacher is a rollout on the reference route of the student's training pairs,
    :mod:`.teachers`):

    * ``teacher_steps``: at those step counts (``"teacher"``), route shift ``teacher_route_shift``,
      guided in ``teacher_interval`` ``[lo, hi]`` radians (``[]``: everywhere; ``None``: the
      student's guidance interval); ``teacher_cfgs`` sweeps its guidance there (``"teacher_sweep"``,
      ``"teacher_best"`` at 16 steps, else the largest count; ``"ratio"``: student best / teacher best);
    * ``teacher_copied``: ``"teacher_as_copied"``, the teacher the student copies (route, interval
      of its rollouts) at ``cfg_scale`` and over the scales it was trained on; ``"ratio_vs_copied"``;
    * ``teacher_best``: ``"teacher_at_best"``, the :class:`~.teachers.TeacherGrid` setting with the
      lowest FID on tune draw ``teacher_best.draw``, scored on this evaluation's images;
      ``"ratio_vs_best"`` and ``"headline_ratio"`` (the same: the headline is against the teacher at its best).

    ``fidelity``: ``"fidelity"``, per student step count the paired error to the teacher as copied at
    ``cfg_scale`` from the same noise and its FID against the teacher's samples (:mod:`.fidelity`).
    A student that is neither digits nor scenes gets only this, on ``prompts`` (default: the first
    128 of the run's prompts file), with FID on ``inception`` (an Inception feature module, e.g.
    :func:`tbcm.evaluation.inception.load_inception`) when given, else the latent error alone.
    ``batch``: images per sampler call (default 128, 16 for a latent student); ``device``: where
    the networks run (``"auto"``: CUDA if any); ``progress``: tqdm bars on stderr. ``judged=False``
    skips the judge of a digits or scenes student too (the fidelity of ``tbcm eval --reference``).

    ``teacher_samples``: a dict the caller keeps across calls, where the teacher's samples are kept
    by (teacher, setting, images, device) and sampled only when missing: a sweep over checkpoints of
    one run scores the same teacher images at every point, and samples them once. Only for calls
    whose teacher files do not change in between (the teacher's path is the key, not its weights).
    """
    if not judged and not fidelity:
        raise ValueError("judged=False measures fidelity alone: pass fidelity=True")
    student_steps, teacher_steps = list(student_steps), list(teacher_steps)
    teacher_cfgs = [float(w) for w in teacher_cfgs]
    _check_counts("--steps", student_steps)
    if teacher_cfgs and not teacher_steps:
        teacher_steps = [16]
    if teacher_steps:
        _check_counts("--teacher", teacher_steps)
    if n_per_class is not None and n_per_class < 1:
        raise UserError(f"--n must be at least 1 (got {n_per_class})")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be at least 1 (got {batch})")
    overrides = {"cfg_scale": cfg_scale, "shift": student_shift, "fresh_noise": fresh_noise, "routes": student_routes}
    StudentSampler().overridden(**overrides)  # a bad override is refused before any model loads
    for name, values in (("--teacher-cfg", teacher_cfgs), ("--student-cfg", student_cfgs or [])):
        if any(not (w >= 0) for w in values):
            raise UserError(f"{name} must be guidance scales >= 0 (got {values}): e.g. {name} 1,1.5,2")
    if teacher_interval is not None:
        teacher_interval = [float(a) for a in teacher_interval]
        if teacher_interval and not valid_interval(teacher_interval):
            raise UserError(f"--teacher-interval {teacher_interval}: need LO,HI angles with 0 <= LO < HI <= pi/2 "
                            "(e.g. 0,0.5), or none")
    if teacher_best is not None:
        teacher_best.check()
    seed = _resolve_seed(seed, split, draw)
    device = resolve_device(device)

    student_dir, run_dir = find_student(path)
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    sampler = StudentSampler.from_extra(bundle.meta.extra).overridden(**overrides)
    suite_class = _suite_class(bundle, f"student {student_dir}", required=not fidelity) if judged else None
    if suite_class is None:
        for flag, used in (("--teacher", teacher_steps), ("--teacher-cfg", teacher_cfgs),
                           ("--student-cfg", student_cfgs), ("--teacher-best", teacher_best)):
            if used:
                raise UserError(f"{flag} needs a judge (digits or scenes); this student gets --fidelity only: drop {flag}")
        if prompts is None:
            prompts, prompts_source = run_prompts(run_dir)
        else:
            prompts, prompts_source = list(prompts), "given"
    else:
        suite_class.check(bundle, f"student {student_dir}")
        if prompts is not None:
            raise UserError(f"--prompts is for students without a judge; the {suite_class.name} suite has fixed prompts: "
                            "drop --prompts")
        prompts, prompts_source = list(suite_class.prompts), suite_class.name
    teacher, teacher_name = None, None
    if teacher_steps or teacher_copied or teacher_best is not None or fidelity:
        teacher_name = run_teacher(run_dir)  # load and check everything before generating anything
        tbundle = load_bundle(teacher_name, expect_kind="teacher", text_cache=None)
        if (tbundle.meta.channels, tbundle.meta.image_size) != (bundle.meta.channels, bundle.meta.image_size):
            raise UserError(f"teacher {teacher_name} makes other images than student {student_dir}: "
                            "pass the run folder the student was distilled in")
        if suite_class is not None:
            suite_class.check(tbundle, f"teacher {teacher_name}")
        teacher = Teacher.from_bundle(tbundle).to(device)
    run_interval = list(sampler.guidance_interval)
    rows_interval = run_interval if teacher_interval is None else teacher_interval
    cfg = sampler.cfg_scale
    honest = bool(teacher_cfgs) or student_cfgs is not None
    if student_cfgs is None:
        student_cfgs = list(sampler.cfg_scales)

    suite = suite_class(classifier) if suite_class is not None else None  # None: the suite's shipped judge
    n = (suite.default_n if suite is not None else 1) if n_per_class is None else n_per_class
    batch = batch if batch is not None else (128 if suite is not None else 16)
    images = ImageDraw(tuple(prompts), n, seed)
    check_draw_size(len(images))
    student = Student.from_bundle(bundle).eval().to(device)
    shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
    s_enc = Encodings(prompts, bundle.encoder.eval().to(device))
    t_enc = Encodings(prompts, teacher.encoder) if teacher is not None else None
    bar_opts = {"disable": not progress, "unit": "img", "dynamic_ncols": True, "leave": False}

    def pixels(x0: torch.Tensor) -> torch.Tensor:
        return to_pixels(x0, bundle.meta.sigma_d)

    student_x0: dict = {}

    def student_images(steps: int, w: float, on: ImageDraw = images) -> torch.Tensor:
        key = (steps, float(w), on.seed)
        if key not in student_x0:
            with tqdm(total=len(on), desc=f"student {steps} step(s), w {w:g}", **bar_opts) as bar:
                student_x0[key] = sample_draw(on, student_fn(student, sampler, steps, w), s_enc, shape, device,
                                              batch, bar)
        return student_x0[key]

    teacher_x0: dict = {} if teacher_samples is None else teacher_samples

    def teacher_key(setting: TeacherSetting, on: ImageDraw) -> tuple:
        return teacher_name, setting, on, str(device)

    def teacher_images(setting: TeacherSetting, on: ImageDraw = images, bar=None) -> torch.Tensor:
        key = teacher_key(setting, on)
        if key not in teacher_x0:
            fn = teacher_fn(teacher, setting.route(), setting.cfg, setting.interval)
            own = tqdm(total=len(on), desc=f"teacher {setting.label()}", **bar_opts) if bar is None else nullcontext(bar)
            with own as used:
                teacher_x0[key] = sample_draw(on, fn, t_enc, shape, device, batch, used)
        return teacher_x0[key]

    def scores_of(x0: torch.Tensor) -> dict:
        return suite.score(pixels(x0), n)

    def rows_setting(steps: int, w: float) -> TeacherSetting:
        return TeacherSetting(int(steps), sampler.teacher_route_shift, float(w),
                              tuple(rows_interval) if rows_interval else None)

    result: dict = {"student": {}, "teacher": {}}
    if suite is not None:
        for steps in student_steps:
            result["student"][str(steps)] = scores_of(student_images(steps, cfg))
        for steps in teacher_steps:
            result["teacher"][str(steps)] = scores_of(teacher_images(rows_setting(steps, cfg)))
        if honest:
            result["student_sweep"] = {str(k): {str(w): scores_of(student_images(k, w)) for w in student_cfgs}
                                       for k in student_steps}
            result["student_best"] = {k: _best(sweep) for k, sweep in result["student_sweep"].items()}
        if teacher_cfgs:
            result["teacher_sweep"] = {str(k): {str(w): scores_of(teacher_images(rows_setting(k, w)))
                                                for w in teacher_cfgs} for k in teacher_steps}
            at = "16" if "16" in result["teacher_sweep"] else str(max(teacher_steps))
            result["teacher_best"] = {"steps": int(at), **_best(result["teacher_sweep"][at])}
            result["ratio"] = {k: b["fid"] / result["teacher_best"]["fid"] for k, b in result["student_best"].items()}

    copied = copied_setting(sampler, cfg) if teacher is not None else None
    if suite is not None and (teacher_copied or teacher_best is not None or fidelity):
        entry = {**copied.to_dict(), "angles": [float(a) for a in sampler.teacher_route()], **scores_of(teacher_images(copied))}
        entry["sweep"] = {str(w): scores_of(teacher_images(copied_setting(sampler, w)))
                          for w in dict.fromkeys([cfg, *sampler.cfg_scales])}
        result["teacher_as_copied"] = entry
        result["ratio_vs_copied"] = {k: s["fid"] / entry["fid"] for k, s in result["student"].items()}

    if teacher_best is not None:
        tune = ImageDraw(tuple(prompts), n, draw_seed("tune", teacher_best.draw))
        check_draw_size(len(tune))
        settings = teacher_best.settings(sampler)
        tried = []
        with tqdm(total=len(settings) * len(tune), desc="teacher at its best (tune draw)", **bar_opts) as bar:
            for setting in settings:
                tried.append({**setting.to_dict(), **scores_of(teacher_images(setting, tune, bar))})
                if tune.seed != images.seed:  # keep memory flat: only the chosen one is sampled again
                    teacher_x0.pop(teacher_key(setting, tune), None)
        best = min(range(len(settings)), key=lambda i: tried[i]["fid"])
        chosen = settings[best]
        result["teacher_at_best"] = {
            **chosen.to_dict(), **scores_of(teacher_images(chosen)),
            "tune": {"split": "tune", "draw": teacher_best.draw, "seed": tune.seed, "fid": tried[best]["fid"],
                     "adherence": tried[best]["adherence"]},
            "selected_on_reported_images": tune.seed == images.seed,
            "grid": teacher_best.to_dict(sampler), "tried": tried}
        result["ratio_vs_best"] = {k: s["fid"] / result["teacher_at_best"]["fid"] for k, s in result["student"].items()}
        result["headline_ratio"] = dict(result["ratio_vs_best"])

    if fidelity:
        result["fidelity"] = _fidelity(suite, student_images, teacher_images(copied), copied, student_steps, cfg,
                                       bundle, n, inception, batch)

    if suite is not None:
        result["data_floor"] = suite.data_floor(n)
        result["reference"] = suite.reference_info()
    else:
        result["reference"] = None
        result["prompts"] = {"source": prompts_source, "count": len(prompts)}
    where = split_of_seed(seed)
    result.update({"n_per_class": n, "cfg_scale": cfg, "seed": seed, "split": split,
                   "draw": None if split is None else (0 if draw is None else draw),
                   "draw_of_seed": None if where is None else {"split": where[0], "draw": int(where[1])},
                   "teacher_model": teacher_name, "fresh_noise": sampler.fresh_noise,
                   "student_shift": sampler.shift, "student_routes": sampler.routes,
                   "suite": suite.name if suite is not None else "fidelity", "family": bundle.meta.family,
                   "teacher_interval": list(rows_interval), "teacher_route_shift": sampler.teacher_route_shift,
                   "sampler": sampler.to_dict(), "noise": "per-image seeds"})
    if honest:
        result["student_cfgs"] = student_cfgs
    if teacher_cfgs:
        result["teacher_cfgs"] = teacher_cfgs
    return result


def _fidelity(suite, student_images, teacher_x0: torch.Tensor, copied: TeacherSetting, student_steps: list[int],
              cfg: float, bundle: Bundle, n: int, inception, batch: int) -> dict:
    """The ``"fidelity"`` entry: per student step count, the paired error to the teacher as copied
    (same noise, guidance ``cfg``) and the FID of the student's samples against the teacher's."""
    sd = bundle.meta.sigma_d
    out: dict = {"teacher": {**copied.to_dict(), "what": "the teacher as copied: its training rollouts' route and "
                             "guidance interval, from each student image's initial noise"},
                 "cfg_scale": cfg, "images": int(teacher_x0.shape[0]), "steps": {}}
    if suite is not None:
        t_px = to_pixels(teacher_x0, sd)
        out["features"] = "the digit classifier's" if suite.name == "digits" else "the scenes judge's"
    elif inception is not None:
        t_px = _uint8_pixels(teacher_x0, bundle, batch)
        out["features"] = "FID Inception pool3"
    else:
        t_px = None
        out["features"] = None
        out["note"] = ("no Inception weights given (--inception FILE): the latent paired error alone, "
                       "no judged error or FID against the teacher")
    for steps in student_steps:
        s_x0 = student_images(steps, cfg)
        entry = latent_error(s_x0, teacher_x0, sd, n)
        if suite is not None:
            s_px = to_pixels(s_x0, sd)
            entry.update(judged_error(s_px, t_px, n, suite.features, suite.labels))
            entry["fid_to_teacher"] = suite.fid_against(t_px, s_px)
            entry["spectrum_ratio"] = spectrum_ratio(s_px, t_px)  # per frequency band, low to high
            if (patch := pixel_patch(bundle.meta)) is not None:  # blocks on the network's patch grid
                entry["block_ratio"] = block_ratio(s_px, t_px, patch)
        elif t_px is not None:
            s_px = _uint8_pixels(s_x0, bundle, batch)
            entry["fid_to_teacher"] = frechet_between(t_px, s_px, inception)
            entry["spectrum_ratio"] = spectrum_ratio(s_px.float(), t_px.float())
        else:
            entry["fid_to_teacher"] = None
        out["steps"][str(steps)] = entry
    return out


def _uint8_pixels(x0: torch.Tensor, bundle: Bundle, batch: int) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` of TrigFlow-space samples (decoded by the teacher's VAE if latent)."""
    from ..generate import to_uint8_rgb

    if bundle.decode is None:
        return to_uint8_rgb(to_pixels(x0, bundle.meta.sigma_d))
    return torch.cat([to_uint8_rgb(bundle.decode(c)).cpu() for c in x0.split(batch)])


def _best(sweep: dict) -> dict:
    """``{"cfg", "fid", "adherence"}`` of the guidance with the lowest FID in ``{cfg: scores}``."""
    w = min(sweep, key=lambda k: sweep[k]["fid"])
    return {"cfg": float(w), **sweep[w]}
