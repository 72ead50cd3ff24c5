"""Does the data-free sampler tuning (``tbcm tune-sampler``) choose what a judge would?

For each given digits run (train them with the tune seeds; the check looks at tune draws only), the
sampler search of :func:`tbcm.sampler_tuning.tune_saved_student` is run once with every candidate
also scored by the digit judge's FID against the held-out digits (``fid_data``, which the tuning
itself never sees). Printed per run and step count: the rank correlation (Spearman) of each
data-free measure with ``fid_data``, and ``fid_data`` of the sampler each measure chooses beside
the best candidate's and the run's saved sampler's. Nothing is written to the runs.

    python benchmarks/tune_sampler.py runs/tune/s100 runs/tune/s101 --images 1000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a, dtype=torch.float64).argsort().argsort().double()
    rb = torch.tensor(b, dtype=torch.float64).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-30))


def check_run(run: str, images: int, draw: int) -> dict:
    from tbcm.evaluation.digits import DigitsSuite
    from tbcm.sampler_tuning import MEASURES, tune_saved_student
    from tbcm.sampling import to_pixels
    from tbcm.trigflow import reference_route

    suite = DigitsSuite()

    def judge(tune, n, bundle):
        return {"fid_data": lambda x0: suite.score(to_pixels(x0, bundle.meta.sigma_d), n)["fid"]}

    result, record = tune_saved_student(run, images=images, draw=draw, write=False, progress=True, also=judge)
    saved = result.before
    out = {"run": run, "draw": draw, "images": record["images"], "steps": {}}
    for n in sorted({t["steps"] for t in record["tried"]}):
        rows = [t for t in record["tried"] if t["steps"] == n]
        fid = [t["scores"]["fid_data"] for t in rows]
        entry = {"candidates": len(rows), "best_fid_data": min(fid)}
        saved_row = [t for t in rows if t["route"] == [round(a, 6) for a in saved.angles(n)[1:-1]] and t["fresh_noise"] == saved.fresh_noise]
        entry["saved_fid_data"] = saved_row[0]["scores"]["fid_data"] if saved_row else None
        paper = [round(float(a), 6) for a in reference_route(n, 2.5)[1:]]  # the library default: shift 2.5, fresh noise
        paper_row = [t for t in rows if t["route"] == paper and t["fresh_noise"] == 1.0]
        entry["default_fid_data"] = paper_row[0]["scores"]["fid_data"] if paper_row else None
        for m in MEASURES:
            vals = [t["scores"][m] for t in rows]
            pick = min(range(len(rows)), key=lambda i: vals[i])
            entry[m] = {"spearman_with_fid_data": spearman(vals, fid), "chosen_fid_data": fid[pick],
                        "chosen": {"route": rows[pick]["route"], "fresh_noise": rows[pick]["fresh_noise"]}}
        out["steps"][str(n)] = entry
    out["chosen_by_tuning"] = record["chosen"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="digits distill run folders (tune training seeds)")
    ap.add_argument("--images", type=int, default=1000, help="tune images (100 per digit: the judge's FID size)")
    ap.add_argument("--draw", type=int, default=0, help="the tune draw")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [check_run(r, args.images, args.draw) for r in args.runs]
    for res in results:
        print(f"{res['run']} (tune draw {res['draw']}, {res['images']} images)")
        for n, e in res["steps"].items():
            parts = [f"{m}: rho {e[m]['spearman_with_fid_data']:+.2f}, picks FID {e[m]['chosen_fid_data']:.2f}"
                     for m in ("frechet", "paired")]
            saved, default = (("n/a" if e[k] is None else f"{e[k]:.2f}") for k in ("saved_fid_data", "default_fid_data"))
            print(f"  {n} steps, {e['candidates']} candidates: best FID {e['best_fid_data']:.2f}, saved {saved}, "
                  f"library default {default}; "
                  + "; ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
