"""Quality at equal teacher calls: the trajectory pool against per-step rollouts (issue 14).

Reads the recipe ablations already run (``benchmarks/results/*.jsonl``; nothing is trained) and
pairs each pool variant with the variant whose overrides are the same but for
``pairs.pool_prompts`` (same guidance set, training steps and images per digit). Where the run
folders are on this machine their saved ``config.yaml`` files are compared key by key, and their
``metrics.csv`` gives the teacher calls each run spent (else they are computed from the config).

FID (digit-classifier features, 100 images per digit) is printed against guided teacher calls at
1, 2 and 4 student steps, at the evaluation guidance and at the student's best guidance input.
When the rows hold a curve with more than the final point, every point is used; the existing rows
hold only the final checkpoint, and the report says so. A PNG goes to docs/img/.

    python benchmarks/pool_quality.py                  # table + docs/img/pool_quality_teacher_calls.png
    python benchmarks/pool_quality.py --write-doc      # also the marked block of docs/results.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PNG = ROOT / "docs" / "img" / "pool_quality_teacher_calls.png"
POOL_KEY = "pairs.pool_prompts"
# keys that change what is saved or checked, not what is trained
NOT_TRAINING = {"checkpoint_every", "keep_checkpoints", "sample_every", "start_check_max_error", "log_every"}
# keys newer than the older runs, with the value the code of that time had
THEN_DEFAULTS = {"pairs.pool_prompts": 0, "pairs.pool_reuse": 1, "optim.name": "adamw",
                 "optim.came_eps": "unused by adamw", "pairs.rollout_dtype": "fp32", "pairs.rollout_compile": False}


def load_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row["variant"] != "teacher":
                    rows.append({**row, "file": path.name})
    return rows


def pool_of(overrides: list[str]) -> int:
    vals = [int(o.split("=", 1)[1]) for o in overrides if o.startswith(POOL_KEY + "=")]
    return vals[-1] if vals else 0


def pairs_of_variants(rows: list[dict]) -> list[tuple[str, str, str]]:
    """``(per-step variant, pool variant, guidance set)`` whose overrides differ only in the pool's
    size, at the same guidance set, training steps and images per digit."""
    first = {}
    for r in rows:
        first.setdefault((r["variant"], r["guidance"]), r)
    out = []
    for (pooled, g), a in first.items():
        if pool_of(a["overrides"]) == 0:
            continue
        rest = sorted(o for o in a["overrides"] if not o.startswith(POOL_KEY + "="))
        for (plain, g2), b in first.items():
            if g2 == g and pool_of(b["overrides"]) == 0 and sorted(b["overrides"]) == rest \
                    and b["steps"] == a["steps"] and b["n"] == a["n"]:
                out.append((plain, pooled, g))
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(plain: dict, pooled: dict) -> list[str] | None:
    """Training-relevant keys that differ between two runs' saved configs (a key missing from the
    older one counts at that code's default); None when a run folder is not on this machine."""
    a_path, b_path = Path(plain["run"]) / "config.yaml", Path(pooled["run"]) / "config.yaml"
    if not (a_path.is_file() and b_path.is_file()):
        return None
    a, b = _flat(yaml.safe_load(a_path.read_text())), _flat(yaml.safe_load(b_path.read_text()))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in NOT_TRAINING or key == "seed":
            continue
        va, vb = a.get(key, THEN_DEFAULTS.get(key, "<absent>")), b.get(key, THEN_DEFAULTS.get(key, "<absent>"))
        if key == "optim.came_eps" and a.get("optim.name", "adamw") == b.get("optim.name", "adamw") == "adamw":
            continue
        if va != vb:
            diffs.append(f"{key}: {va} -> {vb}")
    return diffs


def teacher_calls(row: dict) -> tuple[int, str]:
    """Guided teacher calls the run spent by its last step: from its metrics.csv, else from the
    config (each prompt of a K-point route costs K calls; a pool rolls out whole refills)."""
    metrics = Path(row["run"]) / "metrics.csv"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        header, last = lines[0].split(","), lines[-1].split(",")
        return int(float(dict(zip(header, last))["teacher_calls"])), "metrics.csv"
    from tbcm.config import DistillConfig, load_config

    cfg = load_config(DistillConfig, None, [f"steps={row['steps']}", *row["overrides"]])
    prompts = row["steps"] * cfg.prompts_per_step
    q = pool_of(row["overrides"])
    if q:
        prompts = math.ceil(prompts / q) * q
    return prompts * cfg.pairs.route_points, "computed from the config"


def points(row: dict) -> list[dict]:
    """``[{"step", "student": {k: {fid, adherence}}}]``: the curve, or the final scores alone."""
    curve = row.get("curve") or []
    return curve if len(curve) > 1 else [{"step": row["steps"], "student": row["student"]}]


def best_input(row: dict, k: str) -> float:
    """The student's FID at its best guidance input (fresh re-noising), ``k`` steps."""
    return min(row["sweep"][w]["1.0"][k]["fid"] for w in row["sweep"])


def _ms(xs: list[float]) -> str:
    return f"{xs[0]:.1f}" if len(xs) == 1 else f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def report(rows: list[dict]) -> tuple[str, list[dict]]:
    lines, groups = [], []
    for plain, pooled, guidance in pairs_of_variants(rows):
        steps, n = next((r["steps"], r["n"]) for r in rows if r["variant"] == pooled and r["guidance"] == guidance)
        runs = {name: sorted((r for r in rows if r["variant"] == name and r["guidance"] == guidance
                              and r["steps"] == steps and r["n"] == n), key=lambda r: r["seed"])
                for name in (plain, pooled)}
        seeds = sorted(set(r["seed"] for r in runs[plain]) & set(r["seed"] for r in runs[pooled]))
        runs = {name: [r for r in rs if r["seed"] in seeds] for name, rs in runs.items()}
        curves = any(len(r.get("curve") or []) > 1 for rs in runs.values() for r in rs)
        lines += [f"Per-step rollouts: `{plain}` ({runs[plain][0]['file']}); pool: `{pooled}` "
                  f"({runs[pooled][0]['file']}); guidance set {runs[plain][0]['guidance']}, seeds {seeds}, "
                  f"{runs[plain][0]['steps']} training steps, evaluated at w={runs[plain][0]['eval_cfg']}.", ""]
        for seed in seeds:
            a = next(r for r in runs[plain] if r["seed"] == seed)
            b = next(r for r in runs[pooled] if r["seed"] == seed)
            diffs = config_differences(a, b)
            lines.append(f"- seed {seed}: saved configs differ in "
                         + ("(run folders not on this machine; paired by overrides only)" if diffs is None
                            else ", ".join(diffs) or "nothing but the pool"))
        lines.append("")
        lines.append("FID against guided teacher calls "
                     + ("(every curve point)" if curves else
                        "(**final checkpoints only**: these runs were scored at their last step, so each run "
                        "is one point, not a curve)") + ":")
        lines += ["", "| rollouts | seed | teacher calls | source of the count | 1 step | 2 steps | 4 steps | "
                  "1 step, best input | 2 steps, best input | 4 steps, best input |", "|---|---|---|---|---|---|---|---|---|---|"]
        summary = {}
        for label, name in (("per step", plain), ("pool", pooled)):
            for r in runs[name]:
                calls, where = teacher_calls(r)
                for pt in points(r):
                    c = calls if pt["step"] == r["steps"] else round(calls * pt["step"] / r["steps"])
                    fids = [pt["student"][k]["fid"] for k in ("1", "2", "4")]
                    best = [best_input(r, k) for k in ("1", "2", "4")] if pt["step"] == r["steps"] else [math.nan] * 3
                    lines.append(f"| {label} | {r['seed']} | {c:,} | {where} | "
                                 + " | ".join(f"{x:.1f}" for x in fids + best) + " |")
                    groups.append({"label": label, "pair": pooled, "seed": r["seed"], "calls": c, "fid": fids,
                                   "best": best})
                    if pt["step"] == r["steps"]:
                        summary.setdefault(label, []).append((fids, best))
        lines.append("")
        lines += ["Seed means at the final step (pool minus per step; negative = the pool better):", "",
                  "| steps | per step | pool | difference | best input: per step | pool | difference |",
                  "|---|---|---|---|---|---|---|"]
        for i, k in enumerate(("1", "2", "4")):
            a = [f[i] for f, _ in summary["per step"]]
            b = [f[i] for f, _ in summary["pool"]]
            ab = [g[i] for _, g in summary["per step"]]
            bb = [g[i] for _, g in summary["pool"]]
            lines.append(f"| {k} | {_ms(a)} | {_ms(b)} | {statistics.mean(b) - statistics.mean(a):+.1f} | {_ms(ab)} | "
                         f"{_ms(bb)} | {statistics.mean(bb) - statistics.mean(ab):+.1f} |")
        lines.append("")
    return "\n".join(lines), groups


def plot(groups: list[dict], path: Path) -> None:
    """The pair with the most seeds: FID at 1, 2, 4 steps against teacher calls, every run."""
    pair = max(dict.fromkeys(g["pair"] for g in groups), key=lambda v: sum(g["pair"] == v for g in groups))
    groups = [g for g in groups if g["pair"] == pair]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, i, k in zip(axes, range(3), ("1", "2", "4")):
        for label, colour, dx in (("per step", "tab:blue", -0.01), ("pool", "tab:orange", 0.01)):
            g = [x for x in groups if x["label"] == label]
            xs = [x["calls"] * (1 + dx) for x in g]
            ax.plot(xs, [x["fid"][i] for x in g], "o", color=colour, label=f"{label}, w=1.0")
            ax.plot(xs, [x["best"][i] for x in g], "^", color=colour, mfc="none", label=f"{label}, best input")
        top = max(x["calls"] for x in groups)
        # from 0, so the two markers (nudged apart by 1%) read as the same teacher budget
        ax.set(title=f"{k} step{'s' if k != '1' else ''}", xlabel="guided teacher calls (final checkpoints only)",
               xlim=(0, 1.2 * top), xticks=[0, top // 2, top])
    axes[0].set_ylabel("FID (digit features)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{pair} vs the same recipe with per-step rollouts (one marker per seed)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", nargs="*", type=Path, default=[RESULTS / "faithful.jsonl", RESULTS / "recipe.jsonl"])
    ap.add_argument("--png", type=Path, default=PNG)
    ap.add_argument("--write-doc", action="store_true", help="write the report into docs/results.md")
    args = ap.parse_args()
    text, groups = report(load_rows(args.results))
    if not groups:
        raise SystemExit("no pool variant with a per-step twin in " + ", ".join(map(str, args.results)))
    plot(groups, args.png)
    text += f"`python benchmarks/pool_quality.py`; figure: ![FID against teacher calls](img/{args.png.name})"
    print(text)
    if args.write_doc:
        from results_doc import write_block

        write_block("pool_quality", text, heading="## Quality at equal teacher calls: pool vs per-step rollouts")


if __name__ == "__main__":
    main()
