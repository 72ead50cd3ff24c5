"""Scenes teachers side by side: pooled prompt vector vs cross-attention to the prompt tokens.

Scores each teacher folder given (16 steps, each guidance in ``--cfg``) on the scenes suite's seen
and held-out prompts: FID on the judge's features and GenEval-style adherence.

    tbcm teacher train --out ab_pooled --config configs/teacher_scenes.yaml steps=2000
    tbcm teacher train --out ab_cross --config configs/teacher_scenes.yaml steps=2000 model.text_cross_attention=true
    python benchmarks/scenes_teacher_ab.py ab_pooled ab_cross --n 8
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teachers", nargs="+", help="teacher folders (or builtin:scenes)")
    ap.add_argument("--cfg", default="2,3", help="guidance scales")
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tbcm.models.bundle import load_bundle
    from tbcm.models.teacher import Teacher
    from tbcm.previews import teacher_samples
    from tbcm.scenes.evaluate import ScenesSuite

    suite = ScenesSuite()
    chunk = max(1, 128 // args.n)
    prompts = [suite.prompts[i:i + chunk] for i in range(0, len(suite.prompts), chunk)]
    print("| teacher | w | split | FID | all | count | colours | shapes | binding | position |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.teachers:
        teacher = Teacher.from_bundle(load_bundle(folder, expect_kind="teacher"))
        for w in (float(v) for v in args.cfg.split(",")):
            images = torch.cat([teacher_samples(teacher, p, w, args.steps, args.n) for p in prompts])
            scores = suite.score(images, args.n)
            for split in ("seen", "heldout"):
                s = scores[split]
                print(f"| {folder} | {w:g} | {split} | {s['fid']:.1f} | {s['all']:.1%} | {s['count']:.1%} | "
                      f"{s['colours']:.1%} | {s['shapes']:.1%} | {s['binding']:.1%} | {s['position']:.1%} |",
                      flush=True)
    print(f"\n{args.n} images per prompt, {args.steps} teacher steps; FID floor (real vs real) rises as n falls.")


if __name__ == "__main__":
    main()
