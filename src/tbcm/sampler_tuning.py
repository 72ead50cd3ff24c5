"""Choosing a student's few-step sampler with no data: by its fidelity to its own teacher on tune noise.

A consistency student's 2- and 4-step images depend on where its sampler re-noises (the middle
angles of its route) and how (the re-noising share ``fresh_noise``). Those used to be hand-tuned on
one teacher's judge; this module chooses them per student, by how closely the student's samples
reproduce its teacher's -- the teacher as copied (the route, guidance and guidance interval of its
training rollouts, :func:`tbcm.evaluation.teachers.copied_setting`) -- from the same initial noise
of a **tune** evaluation draw (:mod:`tbcm.evaluation.splits`; the confirm draws never take part).
No dataset and no judge, so it works the same on the digits, a user's Sana, FLUX or SD3 teacher.

The measure is the paired latent error: the mean over images of ``mean((x_student - x_teacher)^2)
/ sigma_d^2`` between the student's sample and the teacher's from the same noise
(:func:`tbcm.evaluation.fidelity.latent_error`). On the digits it ranks the candidates as the
judge's FID against held-out data does (rank correlation 0.77 / 0.86 at 2 steps and 0.78 / 0.82 at
4 steps on tune seeds 100 / 101; ``benchmarks/tune_sampler.py check``, docs/results.md), and on the
confirm seeds and draws the sampler it chooses reads FID 9.69 / 9.47 at 2 / 4 steps against 10.13 /
9.88 for the hand-tuned one (``... confirm``); a Fréchet distance on pooled latents, tried beside
it, ranked them no better than chance (0.05 and 0.02) and was removed.

Search space (:class:`SearchSpace`): per step count, the shifted routes of ``shifts`` (2-step middle
angle ``arctan(shift)``), restart routes that re-noise to about the same angle at every step
(``restarts``: middle angles ``a (1 + d) .. a (1 - d)``, the shape the digits recipe found by hand),
and the student's saved route; the re-noising share over ``fresh_noise`` (one share for all step
counts, as :class:`tbcm.sampler.StudentSampler` holds one). Every candidate is scored; only routes
whose middle angles all lie at or below ``max_angle`` (1.0 rad) may be chosen. The guidance input
is not searched: fidelity compares a student with the teacher *at* a guidance, so a choice of
guidance by fidelity would change the target it is judged against; it stays the run's
``sampler.cfg_scale``.

Cost: one teacher-as-copied draw (``route_points`` guided teacher calls per image) plus, per
candidate, ``steps`` student calls per image: ``images * (route_points + sum over candidates)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from .errors import UserError
from .evaluation.spectrum import band_power, spectrum_ratio
from .sampler import StudentSampler
from .sampling import check_route
from .trigflow import reference_route

MEASURE = "paired"  # the name of the one measure in the records (``scores``)
# per candidate, recorded beside the paired error: its samples' power per frequency band over the
# teacher's (tbcm.evaluation.spectrum). Not part of the choice: a guard that admitted only
# candidates within 0.8-1.25x in every band changed no pick on three digits tune runs and made the
# one it changed on the scenes worse (FID 209.80 -> 211.54; benchmarks/tune_sampler.py check).
SPECTRUM = "spectrum"


@dataclass(frozen=True)
class SearchSpace:
    """The samplers :func:`tune_sampler` tries (angles in TrigFlow radians, ``pi/2`` = noise)."""

    steps: tuple[int, ...] = (2, 4)
    shifts: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 6.0)  # shifted routes; 2-step middle angle arctan(shift)
    restarts: tuple[float, ...] = (0.1, 0.25, 0.5, 0.8)  # restart routes for >= 3 steps: re-noise to ~ this angle
    restart_spread: float = 0.04  # restart middle angles run from a (1 + d) down to a (1 - d)
    fresh_noise: tuple[float, ...] = (0.0, 0.5, 1.0)
    # Only routes whose middle angles all lie at or below this may be chosen (all are scored). The
    # paired error favours re-noising close to pi/2 with the implied noise, an n-step sample close to
    # the 1-step one. Of 14 picks on 7 tune runs of three teachers, 3 lay above 1.0 rad; capped, the
    # judge's FID went 37.89 -> 9.41 (digits, 2 steps), 224.90 -> 210.14 (scenes, 4 steps) and
    # 209.80 -> 211.54 (scenes, 2 steps); the other 11 are unchanged (benchmarks/tune_sampler.py
    # check, docs/results.md).
    max_angle: float = 1.0

    def check(self) -> None:
        if not self.steps or any(int(n) < 2 for n in self.steps):
            raise UserError(f"sampler tuning steps {list(self.steps)}: give step counts >= 2 "
                            "(1 step has no route to choose), e.g. 2,4")
        if not self.shifts or any(not (math.isfinite(s) and s > 0) for s in self.shifts):
            raise UserError(f"sampler tuning shifts {list(self.shifts)}: give positive route shifts, e.g. 0.25,1,2.5")
        if any(not (0 < a < math.pi / 2) for a in self.restarts):
            raise UserError(f"sampler tuning restart angles {list(self.restarts)}: give angles in (0, pi/2) radians")
        if not 0 <= self.restart_spread < 1:
            raise UserError(f"sampler tuning restart spread {self.restart_spread}: give a share in [0, 1)")
        if not (0 < self.max_angle <= math.pi / 2):
            raise UserError(f"sampler tuning max angle {self.max_angle}: give an angle in (0, pi/2] radians "
                            "(pi/2 = no cap)")
        if not self.fresh_noise or any(not 0 <= f <= 1 for f in self.fresh_noise):
            raise UserError(f"sampler tuning fresh-noise shares {list(self.fresh_noise)}: give shares in [0, 1]")

    def routes(self, steps: int, saved: list[float] | None = None) -> list[list[float]]:
        """The distinct middle-angle lists (``steps - 1`` decreasing angles each) tried at ``steps``."""
        out: list[list[float]] = []
        for s in self.shifts:
            out.append([float(a) for a in reference_route(steps, s)[1:]])
        if steps >= 3:
            for a in self.restarts:
                out.append([a * (1 + self.restart_spread * (1 - 2 * i / (steps - 2))) for i in range(steps - 1)])
        if saved is not None:
            out.append([float(a) for a in saved])
        unique: list[list[float]] = []
        for mids in out:
            mids = check_route(steps, _rounded(mids))
            if mids not in unique:
                unique.append(mids)
        return unique

    def eligible(self, mids: list[float]) -> bool:
        """Whether a route with these middle angles may be chosen (all of them within ``max_angle``)."""
        return max(mids, default=0.0) <= self.max_angle + 1e-9

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _rounded(mids) -> list[float]:
    return [round(float(a), 6) for a in mids]


def score(student_x0: Tensor, teacher_x0: Tensor, sigma_d: float) -> float:
    """The paired latent error of TrigFlow-space samples ``[N, C, H, W]`` (row ``i`` of both from
    the same noise): mean over images of ``mean((x_s - x_t)^2) / sigma_d^2``. Lower is closer."""
    return float((student_x0.double() - teacher_x0.double()).pow(2).flatten(1).mean(1).mean() / sigma_d**2)


@dataclass
class TuneResult:
    """What :func:`tune_sampler` tried and chose; ``sampler`` is the chosen one."""

    sampler: StudentSampler
    before: StudentSampler
    tried: list[dict] = field(default_factory=list)  # {"steps", "route", "fresh_noise", "scores"} each
    chosen: dict = field(default_factory=dict)  # {"fresh_noise", "routes": {steps: mids}, "scores": {steps: s}}

    def to_dict(self) -> dict:
        return {"measure": MEASURE, "before": self.before.to_dict(), "after": self.sampler.to_dict(),
                "chosen": self.chosen, "tried": self.tried}


def tune_sampler(sampler: StudentSampler, student_fn, teacher_x0: Tensor, sigma_d: float,
                 space: SearchSpace = SearchSpace(), progress: bool = False,
                 also: dict | None = None) -> TuneResult:
    """Choose ``sampler``'s routes at ``space.steps`` and its re-noising share.

    ``student_fn(sampler, steps) -> [N, C, H, W]`` draws the student's TrigFlow-space samples of the
    tune draw with a candidate sampler (same initial noise and per-image generators as the teacher's);
    ``teacher_x0`` ``[N, C, H, W]`` are the teacher-as-copied samples of that draw. For each share,
    each step count takes its best route among those within ``space.max_angle`` (every route when
    none is); the share with the lowest sum over step counts of ``score / best score at that count``
    wins (one share for all counts). The saved sampler's own routes and share are among the
    candidates, so where they lie within the cap the result is never worse on the tune draw.
    Every candidate's ``scores`` hold the paired error (``"paired"``, the choice), the spectrum ratio
    per band (``"spectrum"``, recorded) and ``also`` (``{name: fn(x0 [N, C, H, W]) -> float}``, e.g. a
    judge's FID in a benchmark).
    """
    space.check()
    steps_list = [int(n) for n in space.steps]
    shares = list(dict.fromkeys([*map(float, space.fresh_noise), sampler.fresh_noise]))
    routes = {n: space.routes(n, sampler.angles(n)[1:-1]) for n in steps_list}
    total = sum(len(routes[n]) for n in steps_list) * len(shares)
    tried: list[dict] = []
    scored: dict = {}  # (share, steps, route index) -> that candidate's scores
    teacher_power = band_power(teacher_x0)  # once: every candidate's spectrum is against these samples
    with tqdm(total=total, desc="tune sampler", unit="sampler", disable=not progress, leave=False) as bar:
        for f in shares:
            for n in steps_list:
                for i, mids in enumerate(routes[n]):
                    cand = sampler.overridden(fresh_noise=f, routes={**sampler.routes, n: mids})
                    x0 = student_fn(cand, n)
                    scores = {MEASURE: score(x0, teacher_x0, sigma_d),
                              SPECTRUM: spectrum_ratio(x0, teacher_x0, reference_power=teacher_power)}
                    scores.update({name: float(fn(x0)) for name, fn in (also or {}).items()})
                    scored[(f, n, i)] = scores
                    tried.append({"steps": n, "route": mids, "fresh_noise": f, "scores": scores})
                    bar.update(1)

    def paired(f: float, n: int, i: int) -> float:  # the choice's measure of a candidate
        return scored[(f, n, i)][MEASURE]

    choosable = {n: [i for i, mids in enumerate(routes[n]) if space.eligible(mids)] or list(range(len(routes[n])))
                 for n in steps_list}
    best_at = {n: min(paired(f, n, i) for f in shares for i in choosable[n]) for n in steps_list}

    def best_route(f: float, n: int) -> int:
        return min(choosable[n], key=lambda i: paired(f, n, i))

    def cost(f: float) -> float:
        return sum(paired(f, n, best_route(f, n)) / max(best_at[n], 1e-30) for n in steps_list)

    share = min(shares, key=cost)
    chosen_routes = {n: routes[n][best_route(share, n)] for n in steps_list}
    chosen = {"fresh_noise": share, "routes": {str(n): r for n, r in chosen_routes.items()},
              "scores": {str(n): paired(share, n, best_route(share, n)) for n in steps_list},
              "spectrum": {str(n): scored[(share, n, best_route(share, n))][SPECTRUM] for n in steps_list},
              # the saved sampler: its own route (always a candidate) at its own share
              "before_scores": {str(n): paired(sampler.fresh_noise, n, routes[n].index(_rounded(sampler.angles(n)[1:-1])))
                                for n in steps_list}}
    after = sampler.overridden(fresh_noise=share, routes={**sampler.routes, **chosen_routes})
    return TuneResult(sampler=after, before=sampler, tried=tried, chosen=chosen)


# -- on a saved student -------------------------------------------------------------------------------
TUNE_FILE = "sampler_tuning.json"  # written beside the student (in the run folder when there is one)
DEFAULT_IMAGES = 512  # tune images: prompts x images per prompt


def tune_models(student, encoder, teacher, prompts: list[str], sampler: StudentSampler, shape: tuple[int, int, int],
                space: SearchSpace = SearchSpace(), images: int = DEFAULT_IMAGES,
                draw: int = 0, device: str | torch.device = "cpu", batch: int = 128, progress: bool = False,
                also=None) -> tuple[TuneResult, dict]:
    """Tune ``sampler`` of the loaded ``student`` (:class:`tbcm.models.student.Student`, its prompt
    ``encoder``) against ``teacher`` (:class:`tbcm.models.teacher.Teacher`) as copied, on tune draw
    ``draw``: ``images`` images over ``prompts`` (at most ``images`` of them, each drawn
    ``images // len(prompts)`` times, at least once) of shape ``shape`` ``(C, H, W)``. Returns the
    result and its record (what :func:`save_tuning` writes). ``also``: ``{name: fn(x0)}``, or a
    factory ``also(draw, n) -> {name: fn(x0)}`` given the tune draw (benchmarks: a judge's FID)."""
    from .evaluation.draws import Encodings, ImageDraw, sample_draw, teacher_fn
    from .evaluation.splits import check_draw_size, draw_seed
    from .evaluation.teachers import copied_setting

    space.check()
    if images < 2:
        raise UserError(f"sampler tuning images {images}: give at least 2 (a distribution needs several images)")
    prompts = list(prompts)[:images]
    n = max(1, images // len(prompts))
    tune = ImageDraw(tuple(prompts), n, draw_seed("tune", draw))
    check_draw_size(len(tune))
    setting = copied_setting(sampler, sampler.cfg_scale)
    bar_opts = {"disable": not progress, "unit": "img", "dynamic_ncols": True, "leave": False}
    with torch.no_grad(), tqdm(total=len(tune), desc=f"tune sampler: teacher {setting.label()}", **bar_opts) as bar:
        teacher_x0 = sample_draw(tune, teacher_fn(teacher, setting.route(), setting.cfg, setting.interval),
                                 Encodings(prompts, teacher.encoder), shape, device, batch, bar)
        s_enc = Encodings(prompts, encoder)

    def student_fn(cand: StudentSampler, steps: int) -> Tensor:
        return sample_draw(tune, lambda cond, noise, gens: cand.sample(student, cond, noise, steps, generator=gens),
                           s_enc, shape, device, batch)

    if callable(also):
        also = also(tune, n)
    result = tune_sampler(sampler, student_fn, teacher_x0, student.sigma_d, space, progress, also)
    record = {"what": "the student's few-step sampler chosen by its fidelity to its teacher as copied on tune "
                      "noise (tbcm.sampler_tuning); confirm draws never take part",
              "teacher_setting": setting.to_dict(), "split": "tune", "draw": draw, "seed": tune.seed,
              "prompts": len(prompts), "images_per_prompt": n, "images": len(tune), "space": space.to_dict(),
              **result.to_dict()}
    return result, record


def save_tuning(student_dir: Path, where: Path, result: TuneResult, record: dict) -> Path:
    """Replace the student's ``model.yaml`` ``extra.sampler`` with the chosen one and write the record
    to ``where / TUNE_FILE``, each atomically. Returns the record's path."""
    import json

    import yaml

    from .atomic import atomic_write

    meta_file = Path(student_dir) / "model.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    meta.setdefault("extra", {})["sampler"] = result.sampler.to_dict()
    record = {**record, "student": str(student_dir), "written_to": str(Path(where) / TUNE_FILE)}
    atomic_write(Path(where) / TUNE_FILE, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    atomic_write(meta_file, lambda p: p.write_text(yaml.safe_dump(meta, sort_keys=False)))
    return Path(where) / TUNE_FILE


def tune_saved_student(path, space: SearchSpace = SearchSpace(), images: int = DEFAULT_IMAGES, draw: int = 0, prompts: list[str] | None = None,
                       device: str | torch.device | None = "cpu", batch: int | None = None,
                       progress: bool = False, write: bool = True, also=None,
                       start: StudentSampler | None = None) -> tuple[TuneResult, dict]:
    """:func:`tune_models` on the student in ``path`` (a run folder or a student folder) and the run's
    teacher and prompts (or ``prompts``), starting from the sampler saved with it (or ``start``);
    ``write``: :func:`save_tuning` (the record beside the student: in the run folder when there is
    one). ``tbcm tune-sampler`` runs this."""
    from .evaluation.evaluate import resolve_device
    from .evaluation.runs import find_student, run_prompts, run_teacher
    from .models.bundle import load_bundle
    from .models.student import Student
    from .models.teacher import Teacher

    space.check()  # bad input is refused before any model loads
    if images < 2:
        raise UserError(f"--images must be at least 2 (got {images}): a distribution needs several images")
    device = resolve_device(device)
    student_dir, run_dir = find_student(path)
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    teacher_name = run_teacher(run_dir)
    tbundle = load_bundle(teacher_name, expect_kind="teacher", text_cache=None)
    if (tbundle.meta.channels, tbundle.meta.image_size) != (bundle.meta.channels, bundle.meta.image_size):
        raise UserError(f"teacher {teacher_name} makes other images than student {student_dir}: "
                        "pass the run folder the student was distilled in")
    if prompts is None:
        prompts, _ = run_prompts(run_dir)
    sampler = StudentSampler.from_extra(bundle.meta.extra) if start is None else start
    shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
    teacher = Teacher.from_bundle(tbundle).to(device)
    student = Student.from_bundle(bundle).eval().to(device)
    encoder = bundle.encoder.eval().to(device)
    if callable(also):
        make = also
        also = lambda draw_, n: make(draw_, n, bundle)  # noqa: E731
    result, record = tune_models(student, encoder, teacher, prompts, sampler, shape, space, images, draw,
                                 device, batch or (128 if bundle.decode is None else 16), progress, also)
    record = {**record, "student": str(student_dir), "teacher": teacher_name}
    if write:
        where = run_dir if run_dir is not None else student_dir
        record["written_to"] = str(save_tuning(student_dir, where, result, record))
    return result, record
