"""Probe: the 1-step sample drawn from pure noise labelled with another angle than pi/2.

The sCM tangent carries a cos t factor and the prior weight is 1 / (sigma_d tan t), so the loss
hardly constrains the student's F in the last interval before pi/2 -- the very angle the 1-step
sampler uses. If F there were smooth in t, starting the sampler a little below pi/2 would change
little; this probe measures what it does (no retraining: the sampler's first angle only, through
``tbcm.evaluation.evaluate`` with ``tbcm.previews.student_angles`` replaced for the call).

    python benchmarks/start_angle.py RUN [RUN ...] --starts 1.5708,1.56,1.55,1.5 --n 100

Each line: the run, the first angle, the best guidance input within the run's training range, its
1-step FID and adherence (JSON).
"""

from __future__ import annotations

import argparse
import json
import math

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders (or student folders)")
    ap.add_argument("--starts", default=f"{math.pi / 2},1.56,1.55,1.5", help="first angles, radians")
    ap.add_argument("--n", type=int, default=None, help="images per digit / scenes prompt (default: the suite's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tbcm.previews as previews
    from tbcm.config import DistillConfig, load_config
    from tbcm.evaluation import evaluate
    from tbcm.sampling import student_angles
    from pathlib import Path

    for run in args.runs:
        cfg_file = Path(run) / "config.yaml"
        scales = [float(w) for w in load_config(DistillConfig, cfg_file).cfg_scales] if cfg_file.exists() else None
        for start in [float(s) for s in args.starts.split(",")]:
            previews.student_angles = lambda steps, shift=2.5, s=start: [s, *student_angles(steps, shift)[1:]]
            best = evaluate(run, [1], args.n, student_cfgs=scales)["student_best"]["1"]
            print(json.dumps({"run": run, "start": round(start, 4), "cfg": best["cfg"], "fid": round(best["fid"], 2),
                              "adherence": best["adherence"]}), flush=True)
        previews.student_angles = student_angles


if __name__ == "__main__":
    main()
