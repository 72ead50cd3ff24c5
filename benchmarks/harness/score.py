"""The harness's one scorer: a run folder on evaluation draws of a split, through ``tbcm eval``.

Every number the benchmarks store comes from :func:`score_run`, which calls
:func:`tbcm.evaluation.evaluate.evaluate` once per draw. The judge follows the model, as in
``tbcm eval``: the digit classifier for 1x8x8 models, the scenes judge (seen and held-out prompts)
for 3x32x32 ones.

WHEN ``tbcm eval`` GAINS ITS NEW ARGUMENTS (``split=``/``draw=`` from ``tbcm.evaluation.splits``,
``teacher_copied``, ``teacher_best``, ``fidelity``, the data floor, and the saved sampler read by
``evaluate`` itself), :func:`_evaluate_draw` below is the one place to change: pass
``split=split, draw=draw`` instead of ``seed=draw_seed(...)``, add the new arguments, and drop the
sampler arguments that today work around ``evaluate`` reading only the older students' keys.
:func:`summary_of` then also carries the new entries (fidelity, teacher as copied, data floor).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from .splits import check_split, draw_seed

SAMPLER_KEYS = ("cfg_scale", "shift", "fresh_noise", "routes")


def saved_sampler(run_dir: str | Path, **overrides):
    """The :class:`tbcm.sampler.StudentSampler` saved with the run's student, with ``overrides``
    (``cfg_scale``, ``shift``, ``fresh_noise``, ``routes``; ``None``: keep) applied."""
    from tbcm.evaluation.evaluate import find_student
    from tbcm.sampler import StudentSampler

    student_dir, _ = find_student(run_dir)
    extra = (yaml.safe_load((student_dir / "model.yaml").read_text()) or {}).get("extra", {})
    unknown = set(overrides) - set(SAMPLER_KEYS)
    if unknown:
        raise ValueError(f"unknown sampler settings {sorted(unknown)}: use {', '.join(SAMPLER_KEYS)}")
    return StudentSampler.from_extra(extra).overridden(**overrides)


def _evaluate_draw(run_dir: Path, split: str, draw: int, steps, n, teacher_steps, teacher_cfgs, sampler) -> dict:
    """``tbcm eval`` of one draw, with the arguments ``evaluate`` has today (see the module docstring)."""
    from tbcm.evaluation.evaluate import evaluate

    return evaluate(run_dir, student_steps=list(steps), n_per_class=n, teacher_steps=list(teacher_steps),
                    teacher_cfgs=list(teacher_cfgs), seed=draw_seed(split, draw),
                    # the saved sampler, passed explicitly: today's evaluate reads only older students' keys
                    cfg_scale=sampler.cfg_scale, student_cfgs=[sampler.cfg_scale] if teacher_cfgs else None,
                    student_shift=sampler.shift, fresh_noise=sampler.fresh_noise,
                    student_routes={str(k): v for k, v in sampler.routes.items()},
                    teacher_interval=list(sampler.guidance_interval))


def score_run(run_dir: str | Path, split: str, draws, steps=(1, 2, 4), n: int | None = None,
              teacher_steps=(), teacher_cfgs=(), sampler: dict | None = None) -> dict:
    """Scores of the student in ``run_dir`` (a ``tbcm distill`` run folder, or a folder holding a
    ``student/`` and a ``config.yaml``) at ``steps``, on evaluation ``draws`` of ``split``, ``n``
    images per class (default: the judge's). ``teacher_steps`` adds the run's teacher at those step
    counts, at each guidance of ``teacher_cfgs`` (default: the student's guidance input).
    ``sampler``: overrides of the saved sampler (``cfg_scale``, ``shift``, ``fresh_noise``, ``routes``).

    Returns ``{"split", "draws", "seeds", "n_per_class", "suite", "sampler", "student": {steps:
    {"fid", "adherence"}}, "teacher": {steps: {cfg: {"fid", "adherence"}}}, "per_draw": [...]}``:
    the means over the draws, and each draw's ``evaluate`` result whole.
    """
    check_split(split)
    draws = [int(d) for d in draws]
    if not draws:
        raise ValueError("score_run needs at least one draw")
    run_dir = Path(run_dir)
    chosen = saved_sampler(run_dir, **(sampler or {}))
    per_draw = [_evaluate_draw(run_dir, split, d, steps, n, teacher_steps, teacher_cfgs, chosen) for d in draws]
    return {"split": split, "draws": draws, "seeds": [draw_seed(split, d) for d in draws], **summary_of(per_draw),
            "sampler": chosen.to_dict(), "per_draw": per_draw}


def summary_of(per_draw: list[dict]) -> dict:
    """Means over draws of ``evaluate`` results: the student per step count, the teacher per step
    count and guidance, and the judge's extra scores (the scenes' held-out rows) where present."""
    first = per_draw[0]

    def mean_scores(items: list[dict]) -> dict:  # numbers averaged, nested dicts (scenes' seen/heldout) too
        out = {}
        for k, v in items[0].items():
            if isinstance(v, dict):
                out[k] = mean_scores([it[k] for it in items])
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = statistics.fmean(float(it[k]) for it in items)
        return out

    student = {k: mean_scores([r["student"][k] for r in per_draw]) for k in first["student"]}
    teacher: dict = {}
    for k in first.get("teacher", {}):
        sweeps = [r.get("teacher_sweep", {}).get(k) or {str(r["cfg_scale"]): r["teacher"][k]} for r in per_draw]
        teacher[k] = {w: mean_scores([s[w] for s in sweeps]) for w in sweeps[0]}
    return {"n_per_class": first["n_per_class"], "suite": first["suite"], "student": student, "teacher": teacher}
