"""The shipped scenes judge on fresh real scenes of each split (render seeds it never trained on):
the share it reads exactly (all six attributes); and the floor of scenes FID: real scenes scored
as if they were samples, ``--per-prompt`` per evaluation prompt (what `tbcm eval --n` sets).

    python benchmarks/scenes_judge_accuracy.py --n 2000 --per-prompt 16
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="scenes per split")
    ap.add_argument("--per-prompt", type=int, default=16, help="real scenes per prompt for the FID floor")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tbcm.scenes.evaluate import ScenesSuite
    from tbcm.scenes.generator import parse_prompt, render_many, split, to_flow
    from tbcm.scenes.judge import exact_accuracy, load_judge, real_batch

    judge, (train, held) = load_judge(), split()
    for name, scenes, seed in (("train-split", train, 4242), ("held-out-split", held, 4343)):
        x, y = real_batch(args.n, seed, scenes)
        print(f"{name} scenes: {exact_accuracy(judge, x, y):.2%} exact ({args.n} scenes, render seed {seed})")
    suite, k = ScenesSuite(judge), args.per_prompt
    real = to_flow(render_many([parse_prompt(p) for p in suite.prompts for _ in range(k)], 99))
    scores = suite.score(real, k)
    print(f"FID floor, fresh real scenes at {k} per prompt: seen {scores['seen']['fid']:.1f}, "
          f"held-out {scores['heldout']['fid']:.1f}; everything right: {scores['seen']['all']:.1%} / "
          f"{scores['heldout']['all']:.1%}")


if __name__ == "__main__":
    main()
