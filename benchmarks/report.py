"""docs/results.md from the results store: the current state only, every table printed from the
records of quality.py, curves.py, sampler.py and cost.py (the last record of each key), each
naming its command, commit, machine and date. The same store gives the same text.

    python benchmarks/report.py                              # print
    python benchmarks/report.py --write docs/results.md      # what the repository holds
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `benchmarks.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import tables  # noqa: E402
from benchmarks.harness.store import ROOT, Store  # noqa: E402
from benchmarks.harness.suites import SUITES_DIR, suite_names  # noqa: E402
from tbcm.evaluation import splits  # noqa: E402

DOC = ROOT / "docs" / "results.md"
GPU_SCRIPTS = "`bash benchmarks/gpu_session.sh`, `bash benchmarks/gpu_side_by_side.sh`"


def suite_summary(name: str) -> str:
    """The leading comment of ``benchmarks/suites/NAME.yaml`` up to its "Pinned" line, without the name."""
    words = []
    for line in (SUITES_DIR / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith("Pinned"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    return text.split(": ", 1)[1] if text.startswith(f"{name}: ") else text


def _split_text(split: str) -> str:
    seeds = splits.train_seeds(split)
    return (f"training seeds {', '.join(map(str, seeds))}; evaluation draws of {splits.DRAW_STRIDE:,} image "
            f"seeds each, from seed {splits.draw_seed(split, 0):,}")


def _teachers_text() -> str:
    ratios = " and ".join(f"{tables.steps_word(k)} at most {limit}x" for k, limit in tables.RATIO_TARGETS)
    order = " and ".join(f"{more} steps below {fewer}" for more, fewer in tables.ORDER_TARGETS)
    return ("Teachers. The **teacher at its best** (the headline ratio) is chosen once per teacher, over a grid "
            "of step counts, route shifts, guidance scales and guidance intervals on one tune draw, and only "
            "its chosen setting is scored on the reported draws; the **teacher as copied** runs the route, "
            "guidance interval and guidance of the student's training rollouts. **Fidelity** compares the "
            "student with the teacher as copied from the same noise (paired latent MSE, the share of judged "
            "labels that agree, FID of the student's samples against the teacher's); the **data floor** is "
            "the FID of as many real training images against the same reference. Targets: the student's FID "
            f"against the teacher at its best, {ratios}; {order}, each by more than one standard error.")


def quality_part(store: Store, smoke: bool) -> list[str]:
    records = [r for r in store.latest("quality") if smoke or not r.get("smoke")]
    names = tables.labels(records, smoke)
    out = ["## Quality: the confirm split", ""]
    measured = [n for n in names if any(r["label"] == n and r["split"] == "confirm" and r["kind"] == "student"
                                        for r in records)]
    for n in measured:
        out += [tables.quality_section(records, n, "confirm"), ""]
    missing = [s for s in suite_names() if s not in measured]
    if missing:
        out += ["Not measured yet under the tune/confirm protocol:", "",
                "| suite | recipe | status | command |", "|---|---|---|---|"]
        out += [f"| {s} | {suite_summary(s)} | not measured yet under the tune/confirm protocol | "
                f"`python benchmarks/quality.py --suite {s} --split confirm` |" for s in missing]
        out.append("")
    changes = [text for n in measured if (text := tables.change_section(records, n, "confirm"))]
    if changes:
        out += ["## Changes against their base row: the confirm split, paired by seed", "",
                *wrap("A row named SUITE + overrides against the row SUITE, on the training seeds and draws both "
                      "scored: each seed's difference (change minus base), their mean ± SE, and whether the "
                      "change is better or worse by more than one standard error (a default changes only on "
                      "such a gain, and on no such loss). With two seeds one SE is half the two differences' "
                      "spread, so any two differences of one sign pass it: a floor to clear, not a test."), ""]
        for text in changes:
            out += [text, ""]
    tune = [n for n in names if any(r["label"] == n and r["split"] == "tune" and r["kind"] == "student"
                                    for r in records)]
    out += ["## Quality: the tune split (where choices are made; not a reported figure)", ""]
    for n in tune:
        out += [tables.quality_section(records, n, "tune"), ""]
    if not tune:
        out += [*wrap("Nothing measured on the tune split yet "
                      "(`python benchmarks/quality.py --suite SUITE --split tune`)."), ""]
    tune_changes = [text for n in tune if (text := tables.change_section(records, n, "tune"))]
    if tune_changes:
        out += ["### Changes against their base row on the tune split (a choice, not a report)", "",
                *wrap("Read as on the confirm split (above): with two seeds, two differences of one sign "
                      "clear one SE."), ""]
        for text in tune_changes:
            out += [text, ""]
    return out


def sampler_part(store: Store, smoke: bool) -> list[str]:
    records = [r for r in store.latest("sampler") if smoke or not r.get("smoke")]
    out = ["## The few-step sampler (tune split)", ""]
    for n in tables.labels(records, smoke):
        out += [tables.sampler_section(records, n), ""]
    if not records:
        out += [*wrap("No sampler setting measured yet (`python benchmarks/sampler.py --suite SUITE ...`)."), ""]
    return out


def tuning_part(store: Store) -> list[str]:
    """``tune_sampler.py``'s records: the data-free choice against the judge (tune), and on confirm."""
    records = store.latest("tune_sampler")
    out = ["## The sampler chosen with no data (`tbcm tune-sampler`)", ""]
    checks = [r for r in records if r["mode"] == "check"]
    confirms = [r for r in records if r["mode"] == "confirm"]
    if not records:
        return out + [*wrap("Not measured yet (`python benchmarks/tune_sampler.py check RUNS` on tune seeds, "
                            "`... confirm RUNS` on confirm seeds)."), ""]
    if checks:
        frechet = any("frechet" in e for r in checks for e in r["steps"].values())
        guarded = any("guarded" in e for r in checks for e in r["steps"].values())
        chosen = any("chosen" in e for r in checks for e in r["steps"].values())
        out += [*wrap("Tune seeds, tune draw: the judge's FID against real data, which the tuning never "
                      "sees (digits: the 600 held-out digits, 100 images per digit; scenes: the seen prompts' "
                      "FID, 8 images per prompt; letters: its judge's 2000 held-out letters, 50 images per "
                      "letter), of the sampler the data-free measure picks (the paired "
                      "latent error to the teacher), beside the best of the candidates, the run's saved "
                      "sampler (the recipe's hand-tuned one) and the library default (shift 2.5, fresh "
                      "noise); rho: the rank correlation of the measure with that FID over the candidates."
                      + (" The Fréchet distance on pooled latents, measured beside it in the first check, "
                         "ranked them no better than chance (its column) and was removed." if frechet else "")), "",
                *([] if not guarded else ["", *wrap(
                    "Guarded: the pick of the paired error among the candidates whose samples hold 0.8-1.25x "
                    "the teacher's power in every frequency band (or, where none does, the closest ones); "
                    "the pick's spectrum ratio per band, low to high, in brackets. A guard against blurred "
                    "picks, tried and not adopted where it changes no pick.")]),
                *([] if not chosen else ["", *wrap(
                    "Chosen: the library's pick when the check ran (`tbcm tune-sampler`: one re-noising share "
                    "for all step counts), and in brackets the cap on its routes' middle angles (`--max-angle`, "
                    "rad; none: before the cap).")]),
                "",
                "| run | steps | candidates | best | saved | library default | paired picks (rho) |"
                + (" frechet picks (rho) |" if frechet else "") + (" guarded picks (spectrum) |" if guarded else "")
                + (" chosen |" if chosen else ""),
                "|---|---|---|---|---|---|---|" + ("---|" if frechet else "") + ("---|" if guarded else "")
                + ("---|" if chosen else "")]
        for r in checks:
            for n, e in r["steps"].items():
                row = (f"| {r['run']} | {n} | {e['candidates']} | {e['best']:.2f} | {e['saved']:.2f} | "
                       f"{e['library_default']:.2f} | {e['paired']['picks']:.2f} ({e['paired']['spearman']:+.2f}) |")
                if frechet:
                    row += (f" {e['frechet']['picks']:.2f} ({e['frechet']['spearman']:+.2f}) |" if "frechet" in e
                            else " - |")
                if guarded:
                    g = e.get("guarded")
                    row += (f" {g['picks']:.2f} ({' '.join(f'{v:.2f}' for v in g['spectrum'])}) |" if g else " - |")
                if chosen:
                    cap = f"{r['max_angle']:g}" if r.get("max_angle") is not None else "none"
                    row += f" {e['chosen']:.2f} ({cap}) |" if e.get("chosen") is not None else " - |"
                out.append(row)
        out += ["", f"Command: {tables.commands(checks)}; {tables.provenance(checks)}.", ""]
    out += start_angle_part([r for r in records if r["mode"] == "start"])
    best = [t for t in store.latest("quality") if t["kind"] == "teacher" and t["label"] == "digits_default"
            and t["split"] == "confirm" and not t.get("smoke") and t.get("at_best")]
    for r in confirms:
        counts = list(r["summary"]["tuned"])
        at_best = best[-1]["at_best"] if best and best[-1]["at_best"]["draws"] == list(range(r["draws"])) else None
        seeds = ", ".join(x["run"] for x in r["runs"])
        out += [*wrap(f"Confirm seeds ({seeds}), confirm draws 0-{r['draws'] - 1}: FID mean ± SE over the runs of "
                      "the sampler tuned with no data (starting from the library default's route and "
                      "re-noising), the run's saved sampler and the library default."), "",
                "| sampler | " + " | ".join(f"{k} step{'s' if k != '1' else ''}" for k in counts) + " |",
                "|---|" + "---|" * len(counts)]
        for name, label in (("tuned", "tuned with no data"), ("saved", "saved (hand-tuned)"),
                            ("library_default", "library default")):
            cells = [f"{m:.2f} ± {se:.2f}" + (f" ({m / at_best['mean']['fid']:.2f}x)" if at_best else "")
                     for m, se in (r["summary"][name][k] for k in counts)]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out += [""]
        if at_best:
            out += [*wrap(f"In brackets: FID over the teacher at its best on the same confirm draws "
                          f"({at_best['mean']['fid']:.2f}, the digits_default quality row above)."), ""]
        out += [f"Command: {tables.commands([r])}; {tables.provenance([r])}.", ""]
    return out


def start_angle_part(starts: list[dict]) -> list[str]:
    """``tune_sampler.py start``: the 1-step sample from start angles below pi/2, per tune run."""
    if not starts:
        return []
    out = [*wrap("Tune seeds, tune draw: the 1-step sample from start angles below pi/2 (the noise read as "
                 "the state at that angle), which the search leaves out. Per angle: the judge's FID against "
                 "real data, the paired latent error to the teacher as copied, the spectrum ratio to the "
                 "teacher's samples per band (low to high) and the block ratio; rho: the rank correlation "
                 "of the paired error with that FID over the angles."), "",
           "| run | teacher as copied (FID) | start angle (rad) | FID | paired error | spectrum ratio | block ratio |",
           "|---|---|---|---|---|---|---|"]
    for r in starts:
        for i, a in enumerate(r["starts"]):
            head = (f"| {r['run']} (rho {r['spearman']:+.2f}) | {r['teacher_setting']} ({r['teacher_fid_data']:.2f})"
                    if i == 0 else "| | ")
            blocks = f"{a['blocks']:.2f}" if a.get("blocks") is not None else "-"
            out.append(f"{head} | {a['start']:.4f} | {a['fid_data']:.2f} | {a['paired']:.4f} | "
                       + " ".join(f"{v:.2f}" for v in a["spectrum"]) + f" | {blocks} |")
    picks = []
    for r in starts:
        pick, top = min(r["starts"], key=lambda a: a["paired"]), r["starts"][0]
        picks.append(f"{r['run']}: {pick['start']:.4f} rad, FID {pick['fid_data']:.2f} against "
                     f"{top['fid_data']:.2f} at {top['start']:.4f} rad, highest band {pick['spectrum'][-1]:.2f} "
                     f"against {top['spectrum'][-1]:.2f}")
    out += ["", *wrap("The angle the paired error would pick, per run: " + "; ".join(picks) + ".")]
    return out + ["", f"Command: {tables.commands(starts)}; {tables.provenance(starts)}.", ""]


def curves_part(store: Store, smoke: bool, doc: Path) -> list[str]:
    records = [r for r in store.latest("curves") if smoke or not r.get("smoke")]
    out = ["## FID against training steps", ""]
    for n in tables.labels(records, smoke):
        for split in splits.SPLITS:
            if any(r["label"] == n and r["split"] == split for r in records):
                out += [tables.curves_section(records, n, split, doc), ""]
    if not records:
        out += [*wrap("No curve measured yet (`python benchmarks/curves.py --suite SUITE --every 400`)."), ""]
    return out


def cost_part(store: Store, smoke: bool) -> list[str]:
    records = [r for r in store.latest("cost") if smoke or not r.get("smoke")]
    out = ["## Training cost on CPU", ""]
    for r in records:
        out += [tables.cost_section(r), ""]
    if not records:
        out += [*wrap("Not measured yet under this harness (`python benchmarks/cost.py`: TBCM with the pool, "
                      "TBCM with per-step rollouts, the forward-noised sCM baseline)."), ""]
    return out


def lora_memory_part(store: Store, smoke: bool) -> list[str]:
    """The last record of ``lora_memory.py --write-results`` (smoke records only with ``smoke``)."""
    from benchmarks import lora_memory

    records = [r for r in store.latest(lora_memory.STORE_TABLE) if smoke or not r.get("smoke")]
    out = [lora_memory.HEADING, ""]
    if not records:
        return out + [*wrap(f"Not measured yet (`{lora_memory.COMMAND}`)."), ""]
    r = records[-1]
    return out + [*lora_memory.section(r), "", f"Recorded: {tables.provenance([r])}.", ""]


def render(store: Store, smoke: bool = False, doc: Path = DOC) -> str:
    lines = [
        "# Results",
        "",
        "<!-- Generated by `python benchmarks/report.py --write docs/results.md` from the results store "
        "(benchmarks/results/*.jsonl); edit the harness or rerun a benchmark, not this file. -->",
        "",
        *wrap("The current state only. Every table is printed from the results store by "
        "`python benchmarks/report.py`, and names the command that measured it, the commit, the machine "
        "and the date. The measurements before this harness (2026-12-04 and earlier), chosen and reported "
        "on the same evaluation draws and training seeds, are frozen in [notebook/](notebook/README.md)."),
        "",
        *wrap("Protocol. Every choice (recipe, sampler, guidance, the teacher's best setting) is made on the "
        f"**tune** split ({_split_text('tune')}); every reported figure comes from the **confirm** split "
        f"({_split_text('confirm')}): the mean and standard error over training seeds, with the per-seed "
        "values. A target counts as met only when the confirm mean plus one standard error is within it; "
        "otherwise the table says \"not shown\". FID and adherence come from `tbcm eval` (digits: the "
        "shipped classifier; scenes: the shipped judge; letters: the teacher's own judge, `tbcm judge train`, "
        "benchmarks/teachers/letters/judge)."),
        "",
        *wrap(_teachers_text()),
        "",
        *quality_part(store, smoke),
        *sampler_part(store, smoke),
        *tuning_part(store),
        *curves_part(store, smoke, doc),
        *cost_part(store, smoke),
        *lora_memory_part(store, smoke),
        *gpu_part(store),
    ]
    return strip_paths("\n".join(lines).rstrip() + "\n")


def wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, break_long_words=False, break_on_hyphens=False)


def gpu_part(store: Store) -> list[str]:
    """The Sana-shape side-by-side rows ``sana_real_shape.py --write-results`` recorded, or a stub."""
    from benchmarks import sana_real_shape as srs

    rows = store.latest(srs.STORE_TABLE)
    out = [srs.HEADING, ""]
    if not rows:
        return out + [*wrap(f"Not measured yet under this harness. The prepared GPU checks ({GPU_SCRIPTS}; "
                            "`benchmarks/sana_real_shape.py`, `benchmarks/gpu_jvp_check.py`) run on a lent "
                            "machine; `python benchmarks/sana_real_shape.py --no-measure --gpu-json FILE "
                            "--write-results` then records their result here. The earlier measurements are in "
                            "the notebook."), ""]
    text = "\n".join(line for line in srs.render(rows[-1]["slots"]).splitlines()
                     if not line.startswith(f"<!-- {srs.BLOCK}:data"))  # the data lives in the store
    return out + [text.rstrip(), "", f"Recorded: {tables.provenance(rows[-1:])}.", ""]


def strip_paths(text: str) -> str:
    """No path outside the repository in a doc: an absolute path (a run folder, a teacher given by
    path, a JSON file on a lent machine) is shown by its last component."""
    return re.sub(r"(?<![\w.:/])/(?:[\w.+-]+/)+([\w.+-]+)", r"\1", text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="the results store folder (default benchmarks/results/)")
    ap.add_argument("--write", default=None, help="write the text here (docs/results.md) instead of printing it")
    ap.add_argument("--smoke", action="store_true", help="include smoke rows (never in docs/results.md)")
    args = ap.parse_args(argv)
    store = Store(args.store) if args.store else Store()
    doc = Path(args.write).resolve() if args.write else DOC
    text = render(store, args.smoke, doc)
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
