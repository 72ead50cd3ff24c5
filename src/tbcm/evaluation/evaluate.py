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
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from ..errors import UserError, brief
from ..models.adapter import valid_interval
from ..models.bundle import BUILTIN, Bundle, builtin_prompts_path, is_builtin, load_bundle
from ..models.student import Student
from ..models.teacher import Teacher
from ..sampler import StudentSampler
from ..sampling import to_pixels
from .classifier import DigitClassifier, digits_split, load_classifier
from .draws import Encodings, ImageDraw, sample_draw, student_fn, teacher_fn
from .fidelity import frechet_between, judged_error, latent_error
from .metrics import FIDReference, adherence, predict
from .splits import check_draw_size, draw_seed, split_of_seed
from .teachers import TeacherGrid, TeacherSetting, copied_setting

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
RUN_HINT = "pass a `tbcm distill` run folder or its student/ folder"
PROMPTS_LIMIT = 128  # prompts of a run's prompts file the fidelity of a latent student uses
FLOOR_SEED = 0  # the permutation that picks each digit's training images for the data floor


def find_student(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(student folder, run folder or None)`` for a run folder or a student folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: {RUN_HINT}")
    if (path / "student" / "model.yaml").is_file():
        return path / "student", path
    if (path / "model.yaml").is_file():
        return path, (path.parent if (path.parent / "config.yaml").is_file() else None)
    raise UserError(f"{path} is neither a distill run folder nor a student folder: {RUN_HINT}")


def _run_config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as plain YAML (``{}`` if the folder has none)."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return {}
    try:
        raw = yaml.safe_load(config.read_text())
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{config} is not readable YAML ({brief(exc)}): fix it or pass DIR/student") from None
    return raw if isinstance(raw, dict) else {}


def run_teacher(run_dir: Path | None) -> str:
    """The ``teacher`` key of the run's ``config.yaml``; ``"builtin"`` without a run folder."""
    if run_dir is None:
        return BUILTIN
    teacher = _run_config(run_dir).get("teacher")
    return str(teacher) if teacher else BUILTIN


def run_prompts(run_dir: Path | None) -> tuple[list[str], str]:
    """``(prompts, source)``: the first :data:`PROMPTS_LIMIT` prompts of the run's prompts file
    (``config.yaml`` ``prompts``). Raises :class:`UserError` naming ``--prompts`` if there is none."""
    from ..data import read_prompts_file

    spec = _run_config(run_dir).get("prompts") if run_dir is not None else None
    if not spec:
        raise UserError("no prompts to measure fidelity on: pass --prompts FILE (one prompt per line), "
                        "or the run folder whose config.yaml names its prompts file")
    path = builtin_prompts_path(str(spec)) if is_builtin(str(spec)) else Path(str(spec))
    if not path.is_file():
        raise UserError(f"the run's prompts file {path} does not exist: pass --prompts FILE")
    return read_prompts_file(path)[:PROMPTS_LIMIT], str(path)


class DigitsSuite:
    """The digits suite: ``score(images, n)`` of ``[10 n, 1, 8, 8]`` pixels in ``[-1, 1]``,
    row-major (digit, seed); ``features`` / ``labels`` / ``fid_against`` for fidelity to the teacher."""

    name = "digits"
    default_n = 100
    prompts = PROMPTS
    unit = "digit"
    shape = (1, 8, 8)

    def __init__(self, classifier: DigitClassifier | None = None):
        self.clf = classifier if classifier is not None else load_classifier()
        self.split_seed = int(getattr(self.clf, "meta", {}).get("split", {}).get("seed", 0))
        self.split = digits_split(self.split_seed)
        self.heldout = self.split.heldout_images
        self.ref = FIDReference(self.heldout, self.clf)

    @staticmethod
    def matches(channels: int, image_size: int) -> bool:
        return (channels, image_size) == (1, 8)

    @classmethod
    def check(cls, bundle: Bundle, where: str) -> None:
        bundle.encoder.token_ids(PROMPTS)  # PromptError (a UserError) names the unknown word

    def score(self, images: torch.Tensor, n: int) -> dict:
        labels = torch.arange(10).repeat_interleave(n)
        return {"fid": self.ref(images), "adherence": adherence(images, labels, self.clf)}

    # -- fidelity: the judge's view of two paired image sets ------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 64]`` classifier features of ``[N, 1, 8, 8]`` pixels."""
        dtype = next(self.clf.parameters()).dtype
        return torch.cat([self.clf.features(c.to(dtype)) for c in images.split(1024)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """``[N]`` predicted digits."""
        return predict(images, self.clf)

    def fid_against(self, reference: torch.Tensor, images: torch.Tensor) -> float:
        """FID of ``images`` against ``reference`` (e.g. the teacher's samples) on the classifier's features."""
        return FIDReference(reference, self.clf)(images)

    def data_floor(self, n: int) -> dict:
        """FID of real *training* digits against the held-out reference: ``min(n, fewest per digit)``
        training images of each digit (a fixed permutation), as many as a generated set of ``n`` per digit."""
        labels = self.split.train_labels
        gen = torch.Generator().manual_seed(FLOOR_SEED)
        per = min(n, int(labels.bincount(minlength=10).min()))
        picked = [idx[torch.randperm(idx.numel(), generator=gen)[:per]]
                  for idx in (torch.nonzero(labels == d).squeeze(1) for d in range(10))]
        images = self.split.train_images[torch.cat(picked)]
        return {"fid": self.ref(images), "images": int(images.shape[0]), "per_prompt": per,
                "real": "training split of the digits (the teacher's data), against the held-out reference"}

    def reference_info(self) -> dict:
        return {"heldout_images": int(self.heldout.shape[0]), "split_seed": self.split_seed}

    @staticmethod
    def footer(result: dict) -> str:
        ref = result["reference"]
        return (f"{result['n_per_class']} images per digit, cfg {result['cfg_scale']}, image seeds from "
                f"{result['seed']}, one per image; "
                f"FID against {ref['heldout_images']} held-out real digits on the digit classifier's features")

    @staticmethod
    def extra_lines(model: str, steps: str, cfg: float, scores: dict) -> list[str]:
        return []


def _suites() -> tuple:
    """Every offline suite, in the order they are tried (the scenes module loads on demand)."""
    from ..scenes.evaluate import ScenesSuite

    return DigitsSuite, ScenesSuite


def _suite_class(bundle: Bundle, where: str, required: bool = True):
    """The suite that measures the images ``bundle`` makes (its channels and size); ``None`` for
    another kind of model unless ``required``."""
    shape = (bundle.meta.channels, bundle.meta.image_size)
    for suite in _suites():
        if suite.matches(*shape):
            return suite
    if not required:
        return None
    raise UserError(f"{where} makes {shape[0]}x{shape[1]}x{shape[1]} images: tbcm eval measures digits (1x8x8) "
                    "and scenes (3x32x32) models; for a real teacher use --reference, or --fidelity "
                    "(fidelity to its teacher, no data needed)")


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
             device: str | torch.device | None = "cpu", progress: bool = False, judged: bool = True) -> dict:
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

    teacher_x0: dict = {}

    def teacher_images(setting: TeacherSetting, on: ImageDraw = images, bar=None) -> torch.Tensor:
        key = (setting, on.seed)
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
                    teacher_x0.pop((setting, tune.seed), None)
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
        elif t_px is not None:
            entry["fid_to_teacher"] = frechet_between(t_px, _uint8_pixels(s_x0, bundle, batch), inception)
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


def format_table(result: dict) -> str:
    """A small text table of :func:`evaluate`'s result."""
    if result.get("suite") == "fidelity":
        return "\n".join(_fidelity_lines(result) + [_fidelity_footer(result)])
    suite = _suite_named(result.get("suite", "digits"))
    lines = [f"{'model':<8} {'steps':>5} {'cfg':>5} {'FID':>9} {'adherence':>10}"]
    for model in ("student", "teacher"):
        for steps, s in result[model].items():
            lines.append(f"{model:<8} {steps:>5} {result['cfg_scale']:>5g} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
            lines += suite.extra_lines(model, steps, result["cfg_scale"], s)
    if "teacher_best" in result or "student_best" in result:
        lines.append("best guidance of each (the honest comparison):")
        tb = result.get("teacher_best")
        if tb:
            lines.append(f"{'teacher':<8} {tb['steps']:>5} {tb['cfg']:>5g} {tb['fid']:>9.4f} {tb['adherence']:>10.1%}")
            lines += suite.extra_lines("teacher", str(tb["steps"]), tb["cfg"], tb)
        for steps, b in result.get("student_best", {}).items():
            ratio = f"  {result['ratio'][steps]:.2f}x the teacher's best FID" if "ratio" in result else ""
            lines.append(f"{'student':<8} {steps:>5} {b['cfg']:>5g} {b['fid']:>9.4f} {b['adherence']:>10.1%}{ratio}")
            lines += suite.extra_lines("student", steps, b["cfg"], b)
    if result.get("teacher_interval") and result.get("teacher"):
        lo, hi = result["teacher_interval"]
        lines.append(f"teacher rows guided only at angles in ({lo:g}, {hi:g}] rad (the conditional teacher elsewhere)")
    copied, best = result.get("teacher_as_copied"), result.get("teacher_at_best")
    if copied or best:
        lines.append("the teacher the student copies, and the teacher at its best:")
    if copied:
        where = _interval_words(copied["guidance_interval"])
        lines.append(f"{'copied':<8} {copied['steps']:>5} {copied['cfg']:>5g} {copied['fid']:>9.4f} "
                     f"{copied['adherence']:>10.1%}  route shift {copied['shift']:g}, guided {where}")
        lines += suite.extra_lines("teacher", str(copied["steps"]), copied["cfg"], copied)
        for w, s in copied["sweep"].items():
            if float(w) != copied["cfg"]:
                lines.append(f"{'copied':<8} {copied['steps']:>5} {float(w):>5g} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
    if best:
        note = "  (chosen on these same images!)" if best["selected_on_reported_images"] else ""
        lines.append(f"{'best':<8} {best['steps']:>5} {best['cfg']:>5g} {best['fid']:>9.4f} {best['adherence']:>10.1%}"
                     f"  route shift {best['shift']:g}, guided {_interval_words(best['guidance_interval'])}; "
                     f"chosen on tune draw {best['tune']['draw']} (FID {best['tune']['fid']:.4f}) of "
                     f"{len(best['tried'])} settings{note}")
        lines += suite.extra_lines("teacher", str(best["steps"]), best["cfg"], best)
    for steps, s in result["student"].items():
        parts = []
        if "ratio_vs_best" in result:
            parts.append(f"{result['ratio_vs_best'][steps]:.2f}x the teacher at its best (headline)")
        if "ratio_vs_copied" in result:
            parts.append(f"{result['ratio_vs_copied'][steps]:.2f}x the teacher as copied")
        if parts:
            lines.append(f"student {steps} step(s), FID {s['fid']:.4f}: " + ", ".join(parts))
    if "fidelity" in result:
        lines += _fidelity_lines(result)
    floor = result.get("data_floor")
    if floor:
        lines.append(f"data floor: FID {floor['fid']:.4f} of {floor['images']} real training images "
                     f"({floor['per_prompt']} per prompt) against the same reference")
        lines += [f"  {which:<8} FID {floor[which]['fid']:7.2f}" for which in ("seen", "heldout") if which in floor]
    lines.append(suite.footer(result) + _draw_words(result))
    return "\n".join(lines)


def _interval_words(interval) -> str:
    return f"in ({interval[0]:g}, {interval[1]:g}] rad" if interval else "everywhere"


def _draw_words(result: dict) -> str:
    if result.get("split"):
        return f" ({result['split']} draw {result['draw']})"
    where = result.get("draw_of_seed")
    return f" ({where['split']} draw {where['draw']})" if where else ""


def _fidelity_lines(result: dict) -> list[str]:
    fid = result["fidelity"]
    t = fid["teacher"]
    lines = [f"fidelity to the teacher as copied ({t['steps']} steps, shift {t['shift']:g}, w {fid['cfg_scale']:g}, "
             f"guided {_interval_words(t['guidance_interval'])}; same noise, {fid['images']} images):"]
    for steps, e in fid["steps"].items():
        line = (f"  student {steps} step(s): latent MSE/sigma_d^2 {e['latent_mse']:.4g} "
                f"(independent teacher samples: {e['latent_mse_unpaired']:.4g})")
        if "feature_distance" in e:
            line += (f", feature distance {e['feature_distance']:.4g} ({e['feature_distance_unpaired']:.4g}), "
                     f"labels agree {e['label_agreement']:.1%}")
        if e.get("fid_to_teacher") is not None:
            line += f", FID to the teacher's samples {e['fid_to_teacher']:.4f}"
        lines.append(line)
    if fid.get("note"):
        lines.append(f"  {fid['note']}")
    return lines


def _fidelity_footer(result: dict) -> str:
    p = result["prompts"]
    return (f"{result['n_per_class']} image(s) per prompt for {p['count']} prompts ({p['source']}), "
            f"cfg {result['cfg_scale']}, image seeds from {result['seed']}, one per image{_draw_words(result)}")


def _suite_named(name: str):
    return next(suite for suite in _suites() if suite.name == name)
