"""Markdown tables from the results store (what report.py prints and writes to docs/results.md).

Pure functions of the records: the same store gives the same text, byte for byte.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from tbcm.evaluation import splits
from tbcm.evaluation.splits import summarize

from .score import best_is_as_copied, teacher_as_copied
from .store import ROOT


# -- small formatting helpers ----------------------------------------------------------------
def _num(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_se(values, digits: int = 2, unit: str = "") -> str:
    s = summarize(values)
    se = "" if math.isnan(s.se) else f" ± {s.se:.{digits}f}"
    return f"{s.mean:.{digits}f}{unit}{se}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _g(x) -> str:
    return f"{float(x):g}"


def _routes(routes: dict) -> str:
    """``{"4": [0.26, 0.25, 0.24]}`` -> ``", 4 steps on 0.26/0.25/0.24 rad"``."""
    return "".join(f", {k} steps on {'/'.join(_g(a) for a in v)} rad" for k, v in sorted(routes.items()))


def provenance(records: list[dict]) -> str:
    """One line: commits, dates, machines and commands of ``records`` (sorted, deduplicated)."""
    ms = [r["manifest"] for r in records]
    commits = sorted({(m.get("git_commit") or "unknown")[:10] + ("+dirty" if m.get("git_dirty") else "") for m in ms})
    dates = sorted(m["date"][:10] for m in ms)
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    machines = sorted({f"{m['machine']['cpu']}, {m['machine']['cores']} cores"
                       + (f", {m['machine']['gpu']}" if m["machine"].get("gpu") else "") + f", torch {m['machine']['torch']}"
                       for m in ms})
    return f"commit {', '.join(commits)}; {span}; {'; '.join(machines)}"


def commands(records: list[dict]) -> str:
    return "; ".join(f"`{c}`" for c in sorted({r["manifest"]["command"] for r in records}))


def labels(records: list[dict], smoke: bool = False) -> list[str]:
    """The row names in the store, in the order they first appear (smoke rows only if asked)."""
    out: list[str] = []
    for r in records:
        if (smoke or not r.get("smoke")) and r["label"] not in out:
            out.append(r["label"])
    return out


# -- quality ---------------------------------------------------------------------------------------
RATIO_TARGETS = (("1", 1.3), ("4", 1.1))  # the student's FID / the teacher at its best, at most
ORDER_TARGETS = (("2", "1"), ("4", "2"))  # (more, fewer) steps: FID lower by more than one SE
SPECTRUM_TARGET = ("1", 0.8, 1.25)  # steps; the spectrum ratio to the teacher within these in every band


def steps_word(k: str) -> str:
    return f"{k} step{'s' if str(k) != '1' else ''}"


def _interval_words(interval) -> str:
    return f"in ({_g(interval[0])}, {_g(interval[1])}] rad" if interval else "everywhere"


def _grid_interval(text: str) -> str:
    """A ``--best-interval`` value in words."""
    if text == "run":
        return "in the student's interval"
    if text == "none":
        return "everywhere"
    lo, hi = text.split(":")
    return f"in ({lo}, {hi}] rad"


def _setting_words(s: dict) -> str:
    """A teacher setting (``TeacherSetting.to_dict()``) in words."""
    return (f"{s['steps']} steps, route shift {_g(s['shift'])}, guidance {_g(s['cfg'])} "
            f"{_interval_words(s['guidance_interval'])}")


def _sig_se(values) -> str:
    """Mean ± SE to three significant digits (small numbers: the latent MSE)."""
    s = summarize(values)
    return f"{s.mean:.3g}" + ("" if math.isnan(s.se) else f" ± {s.se:.2g}")


def _pct_se(values) -> str:
    s = summarize(values)
    return _pct(s.mean) + ("" if math.isnan(s.se) else f" ± {100 * s.se:.1f}")


def _seeds(values, digits: int = 2) -> str:
    return " / ".join(_num(v, digits) for v in values)


def _record(records: list[dict], kind: str, label: str, split: str) -> dict | None:
    return next((r for r in records if r["kind"] == kind and r["label"] == label and r["split"] == split), None)


def _bands(per_seed: list) -> list[list[float]] | None:
    """Per-seed spectrum ratios ``[[band 0, band 1, ..], ..]`` -> per band the seeds' values; ``None``
    where a seed lacks them (records from before the spectrum)."""
    if not per_seed or any(not v for v in per_seed):
        return None
    return [list(band) for band in zip(*per_seed)]


def quality_section(records: list[dict], label: str, split: str) -> str:
    """The table of one suite (``label``) on one split: per student step count the FID (mean ± SE
    over training seeds, and each seed's mean over the draws), its ratio to the teacher at its best
    (the headline) and as copied, adherence, fidelity to the teacher as copied; the two teachers and
    the data floor on the same draws; on the confirm split, each target's verdict (:func:`splits.verdict`)."""
    students = sorted((r for r in records if r["kind"] == "student" and r["label"] == label and r["split"] == split),
                      key=lambda r: r["train_seed"])
    if not students:
        return f"{label}, {split} split: not measured yet under the tune/confirm protocol."
    teacher = _record(records, "teacher", label, split)
    best = teacher.get("at_best") if teacher else None
    copied = teacher.get("as_copied") if teacher else None
    if copied is None and "teacher_as_copied" in students[0]["score"]:  # quality.py --no-best: from the students
        copied = teacher_as_copied(students[0]["score"])
    choice = next((r for r in records if best and r["key"] == teacher.get("best_key")), None)
    if best is None and copied is not None:
        # no teacher record (quality.py stopped before scoring it): the students' as-copied scores
        # serve when the chosen best is the as-copied setting
        chosen = next((r for r in reversed(records) if r["kind"] == "teacher_best" and r["label"] == label), None)
        if chosen is not None and best_is_as_copied(chosen["setting"], copied):
            best, choice = copied, chosen
    first = students[0]["score"]
    draws = sorted({d for r in students for d in r["score"]["draws"]})
    n = sorted({r["score"]["n_per_class"] for r in students})
    seeds = [r["train_seed"] for r in students]
    unit = "digit" if first["suite"] == "digits" else "prompt"
    heldout = "heldout" in next(iter(first["student"].values()))
    lines = [f"**{label}**, {split} split: training seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, "
             f"draws {draws[0]}-{draws[-1]} ({len(draws)}) of {'/'.join(map(str, n))} images per {unit}, "
             f"judge: {first['suite']}; sampler: w = {_g(first['sampler']['cfg_scale'])}, "
             f"shift {_g(first['sampler']['shift'])}, fresh noise {_g(first['sampler']['fresh_noise'])}"
             + _routes(first["sampler"]["routes"]) + ".", ""]
    if best:
        text = f"Teacher at its best: {_setting_words(best['setting'])}, chosen once"
        if choice:
            g, tune = choice["grid"], choice["tune"]
            text += (f" on tune draw {tune['draw']} ({tune['n_per_class']} images per {unit}; FID there "
                     f"{_num(tune['fid'])}) among {len(choice['tried'])} settings: step counts "
                     f"{', '.join(map(str, g['steps']))}; route shifts {', '.join(map(_g, g['shifts']))}; guidance "
                     f"{', '.join(map(_g, g['cfgs']))}; guided "
                     f"{' or '.join(map(_grid_interval, g['intervals']))}; and the teacher as copied")
        lines += [f"- {text}."]
    if copied:
        lines += [f"- Teacher as copied (the route, guidance interval and guidance of the student's training "
                  f"rollouts): {_setting_words(copied['setting'])}."]
    floor = first.get("data_floor")
    if floor:
        lines += [f"- Data floor: {floor['images']} real images ({floor['per_prompt']} per {unit}; {floor['real']})."]
    lines += ["- Fidelity: the student against the teacher as copied from the same noise, at the student's "
              "guidance: latent MSE / sigma_d^2, share of images whose judged label agrees, FID of the "
              "student's samples against the teacher's.", ""]

    head = "| model | steps | FID (mean ± SE over seeds) | per seed |"
    head += " held-out FID |" if heldout else ""
    head += (" FID / teacher at its best (headline) | FID / teacher as copied | adherence | latent MSE (paired) | "
             "label agreement | FID to the teacher's samples | spectrum ratio, 4 bands low to high | block ratio |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def teacher_row(name: str, t: dict) -> str:
        m = t["mean"]
        row = f"| {name} | {t['setting']['steps']} | {_num(m['fid'])} | - |"
        row += f" {_num(m['heldout']['fid'])} |" if heldout and "heldout" in m else (" - |" if heldout else "")
        vs_best = f"{m['fid'] / best['mean']['fid']:.2f}x" if best else "-"
        vs_copied = f"{m['fid'] / copied['mean']['fid']:.2f}x" if copied else "-"
        return row + f" {vs_best} | {vs_copied} | {_pct(m['adherence'])} | - | - | - | - | - |"

    if best:
        lines.append(teacher_row("teacher at its best", best))
    if copied:
        lines.append(teacher_row("teacher as copied", copied))
    if floor:
        row = f"| data floor (real images) | - | {_num(floor['fid'])} | - |"
        row += f" {_num(floor['heldout']['fid'])} |" if heldout and "heldout" in floor else (" - |" if heldout else "")
        lines.append(row + " - | - | - | - | - | - | - | - |")

    step_keys = sorted({k for r in students for k in r["score"]["student"]}, key=int)
    fids_of = {k: {r["train_seed"]: r["score"]["student"][k]["fid"] for r in students if k in r["score"]["student"]}
               for k in step_keys}
    ratios, bands = {}, {}
    for k in step_keys:
        rows = [r for r in students if k in r["score"]["student"]]
        fids = [r["score"]["student"][k]["fid"] for r in rows]
        row = f"| student | {k} | {_mean_se(fids)} | {_seeds(fids)} |"
        if heldout:
            row += f" {_mean_se([r['score']['student'][k]['heldout']['fid'] for r in rows])} |"
        ratios[k] = [f / best["mean"]["fid"] for f in fids] if best else None
        own = [r["score"].get("teacher_as_copied", {}).get("fid") for r in rows]
        vs_copied = [f / c for f, c in zip(fids, own)] if all(own) else None
        row += (f" {_mean_se(ratios[k]) + 'x' if ratios[k] else '-'} |"
                f" {_mean_se(vs_copied) + 'x' if vs_copied else '-'} |")
        row += f" {_pct_se([r['score']['student'][k]['adherence'] for r in rows])} |"
        fid_rows = [r["score"].get("fidelity", {}).get(k) for r in rows]
        if all(fid_rows):
            agree = [f.get("label_agreement") for f in fid_rows]
            to_teacher = [f.get("fid_to_teacher") for f in fid_rows]
            row += (f" {_sig_se([f['latent_mse'] for f in fid_rows])} |"
                    f" {_pct_se(agree) if None not in agree else '-'} |"
                    f" {_mean_se(to_teacher) if None not in to_teacher else '-'} |")
        else:
            row += " - | - | - |"
        bands[k] = _bands([f.get("spectrum_ratio") if f else None for f in fid_rows])
        row += f" {' / '.join(_mean_se(b) for b in bands[k]) if bands[k] else '-'} |"
        blocks = [f.get("block_ratio") if f else None for f in fid_rows]
        row += f" {_mean_se(blocks) if blocks and None not in blocks else '-'} |"
        lines.append(row)

    if split == "confirm":
        lines += ["", "Targets: met when the mean plus one standard error over the confirm training seeds is within "
                      "the target (`splits.target_met`); otherwise not shown.", "",
                  "| target | per seed | mean ± SE | verdict |", "|---|---|---|---|"]
        for k, limit in RATIO_TARGETS:
            if k in step_keys:
                what = f"{steps_word(k)}: FID <= {limit}x the teacher at its best"
                if ratios[k]:
                    lines.append(f"| {what} | {_seeds(ratios[k])} | {_mean_se(ratios[k])} | "
                                 f"{splits.verdict(ratios[k], limit)} |")
                else:
                    lines.append(f"| {what} | - | - | not shown (no teacher at its best) |")
        for more, fewer in ORDER_TARGETS:
            if more in step_keys and fewer in step_keys:
                both = [s for s in fids_of[more] if s in fids_of[fewer]]
                diff = [fids_of[more][s] - fids_of[fewer][s] for s in both]
                lines.append(f"| {steps_word(more)} below {steps_word(fewer)} by more than one SE "
                             f"(FID difference, paired by seed) | {_seeds(diff)} | {_mean_se(diff)} | "
                             f"{splits.verdict(diff, 0.0)} |")
        k, lo, hi = SPECTRUM_TARGET
        if bands.get(k):
            met = all(splits.target_met(b, hi) and splits.target_met(b, lo, lower_is_better=False) for b in bands[k])
            per_seed = "; ".join(" ".join(_num(b[i]) for b in bands[k]) for i in range(len(bands[k][0])))
            lines.append(f"| {steps_word(k)}: spectrum ratio to the teacher as copied within {lo:g}-{hi:g} in every "
                         f"band (low to high; per seed: its four bands) | {per_seed} | "
                         f"{' / '.join(_mean_se(b) for b in bands[k])} | {'met' if met else 'not shown'} |")
    else:
        lines += ["", "Tune split: no verdicts (targets are judged on the confirm split only)."]
    train = [r["training"] for r in students if r.get("training")]
    if train:
        lines += ["", f"Training: {train[0]['steps']} steps, {_mean_se([t['seconds'] for t in train], 0)} s, "
                      f"peak memory {_mean_se([t['peak_mem_mb'] for t in train], 0)} MB per run."]
    recs = students + [r for r in (teacher, choice) if r is not None]
    lines += ["", f"Command: {commands(recs)}; {provenance(recs)}."]
    return "\n".join(lines)


# -- a change against its base ------------------------------------------------------------------
# what a change is judged on, per student step count: (name, how to read it from a score, lower is better)
CHANGE_METRICS = (
    ("FID", lambda sc, k: sc["student"][k]["fid"], True),
    ("adherence", lambda sc, k: sc["student"][k]["adherence"], False),
    ("latent MSE to the teacher (paired)", lambda sc, k: sc["fidelity"][k]["latent_mse"], True),
    ("FID to the teacher's samples", lambda sc, k: sc["fidelity"][k].get("fid_to_teacher"), True),
)


def base_label(label: str) -> str | None:
    """The row a ``"SUITE + overrides"`` row changes (``"SUITE"``); ``None`` for a suite's own row."""
    base, sep, _ = label.partition(" + ")
    return base if sep else None


def change_verdict(diff: list[float], lower_is_better: bool) -> str:
    """The paired differences (change minus base, per seed) read against zero: better or worse by
    more than one standard error, else within it (one seed: no standard error, not shown)."""
    s = summarize(diff)
    if s.n < 2:
        return "not shown (one seed)"
    gain = -s.mean if lower_is_better else s.mean
    if abs(gain) <= s.se:
        return "within one SE"
    return "better by more than one SE" if gain > 0 else "worse by more than one SE"


def change_section(records: list[dict], label: str, split: str) -> str | None:
    """A change (``label`` = ``"SUITE + overrides"``) against its suite's own row on the same split,
    paired by training seed: per step count and metric, the change minus the base on each seed both
    rows trained (each seed's mean over the same draws), mean ± SE and :func:`change_verdict`.
    ``None`` when there is no base row or no shared seed scored on the same draws and image count."""
    base = base_label(label)
    if base is None:
        return None

    def students(name: str) -> dict[int, dict]:
        return {r["train_seed"]: r["score"] for r in records
                if r["kind"] == "student" and r["label"] == name and r["split"] == split}

    changed, was = students(label), students(base)
    same = sorted(s for s in changed if s in was and changed[s]["draws"] == was[s]["draws"]
                  and changed[s]["n_per_class"] == was[s]["n_per_class"])
    if not same:
        return None
    first = changed[same[0]]
    lines = [f"**{label}** against **{base}**, {split} split: training seed{'s' if len(same) > 1 else ''} "
             f"{', '.join(map(str, same))}, draws {first['draws'][0]}-{first['draws'][-1]} of "
             f"{first['n_per_class']} images each; the change minus the base on each seed.", "",
             "| steps | metric | base (per seed) | change (per seed) | difference (per seed) | difference, mean ± SE | verdict |",
             "|---|---|---|---|---|---|---|"]
    steps = sorted({k for s in same for k in changed[s]["student"] if k in was[s]["student"]}, key=int)
    for k in steps:
        for name, read, lower in CHANGE_METRICS:
            try:
                b = [read(was[s], k) for s in same]
                c = [read(changed[s], k) for s in same]
            except KeyError:
                continue
            if None in b or None in c:
                continue
            scale = 100.0 if name == "adherence" else 1.0
            fmt = (lambda v: f"{v:.3g}") if name.startswith("latent") else _num
            diff = [scale * (x - y) for x, y in zip(c, b)]
            lines.append(f"| {k} | {name}{' (points)' if scale != 1 else ''} | "
                         f"{' / '.join(fmt(scale * v) for v in b)} | {' / '.join(fmt(scale * v) for v in c)} | "
                         f"{' / '.join(fmt(v) for v in diff)} | {_sig_se(diff) if name.startswith('latent') else _mean_se(diff)} | "
                         f"{change_verdict(diff, lower)} |")
    return "\n".join(lines)


# -- curves ----------------------------------------------------------------------------------------
def curve_value(point: dict, metric: str, k: str) -> float | None:
    """``metric`` (``"fid"``, ``"latent_mse"`` or ``"top_band"``: the spectrum ratio of the highest
    band) of a curve's ``point`` at ``k`` student steps; ``None`` where the point lacks it (made with
    ``--no-fidelity``, or before points had fidelity) or it is NaN."""
    if metric == "fid":
        v = point["student"].get(k, {}).get("fid")
    else:
        entry = point.get("fidelity", {}).get(k, {})
        v = entry.get("latent_mse") if metric == "latent_mse" else (entry.get("spectrum_ratio") or [None])[-1]
    return None if v is None or math.isnan(v) else float(v)


def _curve_mean(points: list[dict], metric: str, k: str) -> float | None:
    values = [v for v in (curve_value(p, metric, k) for p in points) if v is not None]
    return statistics.fmean(values) if values else None


def curves_section(records: list[dict], label: str, split: str, doc: Path | None = None) -> str:
    """The table of one curve (``label`` on ``split``): per checkpoint, the mean over training seeds
    of the student's FID at each step count and, where the records have them (``curves.py
    --fidelity``), its paired latent error to the teacher as copied and the spectrum ratio of the
    highest band; records without them render as before."""
    rows = sorted((r for r in records if r["label"] == label and r["split"] == split), key=lambda r: r["train_seed"])
    if not rows:
        return f"{label}, {split} split: no curve measured yet."
    steps_of = sorted({p["step"] for r in rows for p in r["points"]})
    counts = sorted({k for r in rows for p in r["points"] for k in p["student"]}, key=int)
    fidelity = any(p.get("fidelity") for r in rows for p in r["points"])
    seeds = [r["train_seed"] for r in rows]
    lines = [f"**{label}**, {split} split: FID at each checkpoint, mean over training seeds "
             f"({', '.join(map(str, seeds))}) of each seed's mean over draws "
             f"{rows[0]['draws'][0]}-{rows[0]['draws'][-1]}.", ""]
    if fidelity:
        lines[0] = lines[0][:-1] + (
            "; beside it the fidelity to the teacher as copied from the same noise: the paired latent MSE "
            "(/ sigma_d^2) and the spectrum ratio of the highest of four frequency bands (1 = the teacher's; "
            "above 1 speckle, below blur; target 0.8-1.25).")
        copied = [r["teacher_as_copied"] for r in rows if r.get("teacher_as_copied")]
        if copied:
            lines[1:1] = ["", f"Teacher as copied ({_setting_words(copied[0])}): FID "
                              f"{_num(statistics.fmean(c['fid'] for c in copied))} on the same draws."]
    if fidelity:
        head = "| training step | seconds | " + " | ".join(
            f"{what}, {steps_word(k)}" for what in ("FID", "latent MSE", "top band") for k in counts) + " |"
    else:  # as before fidelity was measured
        head = "| training step | seconds | " + " | ".join(steps_word(k) for k in counts) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for step in steps_of:
        pts = [p for r in rows for p in r["points"] if p["step"] == step]
        cells = [_num(_curve_mean(pts, "fid", k)) for k in counts]
        if fidelity:
            latent = [_curve_mean(pts, "latent_mse", k) for k in counts]
            cells += ["-" if v is None else f"{v:.3g}" for v in latent]
            cells += [_num(_curve_mean(pts, "top_band", k)) for k in counts]
        lines.append(f"| {step} | {_num(statistics.fmean(p['seconds'] for p in pts), 0)} | {' | '.join(cells)} |")
    what = "FID, latent error and spectrum ratio" if fidelity else "FID"
    pngs = sorted({r["png"] for r in rows if r.get("png")})
    for png in pngs:
        target = (ROOT / png).resolve()
        if doc is not None and target.is_file() and target.is_relative_to(ROOT):  # no path outside the repository
            lines += ["", f"![{what} against training steps, {label}]({os.path.relpath(target, doc.parent)})"]
    lines += ["", f"Command: {commands(rows)}; {provenance(rows)}."]
    return "\n".join(lines)


# -- sampler ---------------------------------------------------------------------------------------
def sampler_section(records: list[dict], label: str) -> str:
    rows = [r for r in records if r["label"] == label]
    if not rows:
        return f"{label}: no sampler setting measured yet."
    counts = sorted({k for r in rows for s in r["per_run"] for k in s["student"]}, key=int)
    seeds = sorted({s["train_seed"] for r in rows for s in r["per_run"]})
    lines = [f"**{label}**, tune split (choices only): FID mean ± SE over training seeds "
             f"({', '.join(map(str, seeds))}), draws {rows[0]['draws'][0]}-{rows[0]['draws'][-1]}.", ""]
    head = "| w | shift | fresh noise | routes | " + " | ".join(f"{k} step{'s' if k != '1' else ''}" for k in counts)
    head += " | adherence (" + counts[-1] + ") |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = r["setting"]
        cells = [_mean_se([p["student"][k]["fid"] for p in r["per_run"] if k in p["student"]]) for k in counts]
        adh = statistics.fmean(p["student"][counts[-1]]["adherence"] for p in r["per_run"])
        routes = _routes(s["routes"])[2:] or "-"
        lines.append(f"| {_g(s['cfg_scale'])} | {_g(s['shift'])} | {_g(s['fresh_noise'])} | {routes} | "
                     f"{' | '.join(cells)} | {_pct(adh)} |")
    lines += ["", f"Command: {commands(rows)}; {provenance(rows)}."]
    return "\n".join(lines)


# -- cost ------------------------------------------------------------------------------------------
def cost_section(record: dict) -> str:
    """The side-by-side table of one cost.py run, ratios against its first variant."""
    variants = record["variants"]
    base = variants[0]
    isolated = record["isolated"]

    def growth(v: dict) -> float | None:
        return v["peak_rss_mb"] - v["base_rss_mb"] if isolated and v.get("base_rss_mb") is not None else None

    how = ("each variant in a process of its own, memory: peak RSS and its rise over the process's RSS before "
           "the variant was built" if isolated else
           "all variants in one process, steps interleaved; memory: the whole process's peak (not per variant)")
    lines = [f"{record['steps']} timed steps of each after {record['warmup']} warm-up, {record['rounds']} round(s), "
             f"{record['threads']} thread(s); {how}. Ratios against {base['name']}, from this one run.", "",
             f"| variant | suite | overrides | pairs per step | teacher calls per step | ms per step | ms per pair | "
             f"peak RSS (MB) | rise (MB) | time per pair / {base['name']} | rise / {base['name']} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        rise, base_rise = growth(v), growth(base)
        ratio = f"{rise / base_rise:.2f}x" if rise is not None and base_rise else "-"
        lines.append(f"| {v['name']} | {v['suite']} | {' '.join(v['overrides']) or '-'} | {v['pairs_per_step']:.0f} | "
                     f"{v['teacher_calls_per_step']:.1f} | {v['ms_per_step']:.1f} | {v['ms_per_pair']:.2f} | "
                     f"{v['peak_rss_mb']:.0f} | {_num(rise, 0)} | {v['ms_per_pair'] / base['ms_per_pair']:.2f}x | "
                     f"{ratio} |")
    lines += ["", f"Command: {commands([record])}; {provenance([record])}."]
    return "\n".join(lines)
