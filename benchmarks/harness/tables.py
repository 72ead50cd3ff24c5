"""Markdown tables from the results store (what report.py prints and writes to docs/results.md).

Pure functions of the records: the same store gives the same text, byte for byte.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from .splits import summarize
from .store import ROOT

TARGET_RATIO = 1.3  # the 1-step student's FID against the teacher's best


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
    machines = sorted({f"{m['machine']['cpu']}, {m['machine']['cores']} cores, torch {m['machine']['torch']}"
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
def _teacher_cells(score: dict) -> dict:
    """``{(steps, cfg): scores}`` of a teacher record's score."""
    return {(int(k), float(w)): s for k, by_w in score["teacher"].items() for w, s in by_w.items()}


def teacher_best(records: list[dict], label: str, split: str) -> tuple[dict | None, str]:
    """The teacher's best setting, chosen on the tune split when it has been scored there, and its
    scores on ``split``: ``(scores with "steps" and "cfg", where it was chosen)``."""
    def find(which: str):
        return next((r for r in records if r["kind"] == "teacher" and r["label"] == label and r["split"] == which),
                    None)

    here, tune = find(split), find("tune")
    if here is None:
        return None, ""
    cells = _teacher_cells(here["score"])
    chooser = _teacher_cells(tune["score"]) if tune is not None else cells
    candidates = [k for k in chooser if k in cells]
    if not candidates:
        return None, ""
    steps, cfg = min(candidates, key=lambda k: chooser[k]["fid"])
    return {"steps": steps, "cfg": cfg, **cells[steps, cfg]}, ("tune" if tune is not None else split)


def _verdict(values, target: float) -> str:
    s = summarize(values)
    if len(s.values) < 2:
        return "not shown (one seed)"
    return "**met**" if s.mean + s.se <= target else "not shown"


def quality_section(records: list[dict], label: str, split: str) -> str:
    """The table of one suite (``label``) on one split: the teacher at its best, each student step
    count with mean ± SE over training seeds (per-seed values), adherence and the ratio to the teacher."""
    students = sorted((r for r in records if r["kind"] == "student" and r["label"] == label and r["split"] == split),
                      key=lambda r: r["train_seed"])
    if not students:
        return f"{label}, {split} split: not measured yet under the tune/confirm protocol."
    best, chosen_on = teacher_best(records, label, split)
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
    head = "| model | steps | guidance | FID (mean ± SE over seeds) | per seed | adherence |"
    head += " held-out FID |" if heldout else ""
    head += " FID / teacher's best | target |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    if best is not None:
        row = (f"| teacher (best on {chosen_on}) | {best['steps']} | {_g(best['cfg'])} | {_num(best['fid'])} | - | "
               f"{_pct(best['adherence'])} |")
        row += f" {_num(best['heldout']['fid'])} |" if heldout and "heldout" in best else (" - |" if heldout else "")
        lines.append(row + " 1.00 | - |")
    step_keys = sorted({k for r in students for k in r["score"]["student"]}, key=int)
    previous = None
    for k in step_keys:
        rows = [r for r in students if k in r["score"]["student"]]
        fids = [r["score"]["student"][k]["fid"] for r in rows]
        adh = [r["score"]["student"][k]["adherence"] for r in rows]
        row = (f"| student | {k} | {_g(rows[0]['score']['sampler']['cfg_scale'])} | {_mean_se(fids)} | "
               f"{' / '.join(_num(f) for f in fids)} | {_pct(statistics.fmean(adh))} |")
        if heldout:
            row += f" {_mean_se([r['score']['student'][k]['heldout']['fid'] for r in rows])} |"
        ratio = [f / best["fid"] for f in fids] if best is not None else None
        row += f" {_mean_se(ratio) + 'x' if ratio else '-'} |"
        if split != "confirm":
            target = "(tune: no verdict)"
        elif k == "1" and ratio:
            target = f"<= {TARGET_RATIO}x: {_verdict(ratio, TARGET_RATIO)}"
        elif previous is not None and all(previous in r["score"]["student"] for r in rows):
            diff = [r["score"]["student"][k]["fid"] - r["score"]["student"][previous]["fid"] for r in rows]
            target = f"<= {previous} step{'s' if previous != '1' else ''}: {_verdict(diff, 0.0)}"
        else:
            target = "-"
        lines.append(row + f" {target} |")
        previous = k
    train = [r["training"] for r in students if r.get("training")]
    if train:
        lines += ["", f"Training: {train[0]['steps']} steps, {_mean_se([t['seconds'] for t in train], 0)} s, "
                      f"peak memory {_mean_se([t['peak_mem_mb'] for t in train], 0)} MB per run."]
    recs = students + ([r for r in records if r["kind"] == "teacher" and r["label"] == label and r["split"] == split])
    lines += ["", f"Command: {commands(recs)}; {provenance(recs)}."]
    return "\n".join(lines)


# -- curves ----------------------------------------------------------------------------------------
def curves_section(records: list[dict], label: str, split: str, doc: Path | None = None) -> str:
    rows = sorted((r for r in records if r["label"] == label and r["split"] == split), key=lambda r: r["train_seed"])
    if not rows:
        return f"{label}, {split} split: no curve measured yet."
    steps_of = sorted({p["step"] for r in rows for p in r["points"]})
    counts = sorted({k for r in rows for p in r["points"] for k in p["student"]}, key=int)
    seeds = [r["train_seed"] for r in rows]
    lines = [f"**{label}**, {split} split: FID at each checkpoint, mean over training seeds "
             f"({', '.join(map(str, seeds))}) of each seed's mean over draws "
             f"{rows[0]['draws'][0]}-{rows[0]['draws'][-1]}.", ""]
    head = "| training step | seconds | " + " | ".join(f"{k} step{'s' if k != '1' else ''}" for k in counts) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for step in steps_of:
        pts = [p for r in rows for p in r["points"] if p["step"] == step]
        cells = [_num(statistics.fmean(p["student"][k]["fid"] for p in pts if k in p["student"])) for k in counts]
        lines.append(f"| {step} | {_num(statistics.fmean(p['seconds'] for p in pts), 0)} | {' | '.join(cells)} |")
    pngs = sorted({r["png"] for r in rows if r.get("png")})
    for png in pngs:
        target = (ROOT / png).resolve()
        if doc is not None and target.is_file() and target.is_relative_to(ROOT):  # no path outside the repository
            lines += ["", f"![FID against training steps, {label}]({os.path.relpath(target, doc.parent)})"]
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
