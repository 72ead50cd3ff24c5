"""Does the multi-step sampler's intermediate schedule explain its quality? Evaluate one trained
digits student at 1 step and at 2 and 4 steps with several intermediate angles (no training).

    python benchmarks/sampling_angles.py RUN_DIR/student [--n 100] [--cfg 4.5]
    python benchmarks/sampling_angles.py RUN_DIR/student --shifts 2.5,1.5,1,0.7   # the shifted routes only

Same initial noise for every schedule (seeds 0..n-1 per digit) and the same re-noising seed;
FID on the digit classifier's features against the held-out digits, and adherence.
"""

from __future__ import annotations

import argparse
import math

import torch

from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference, adherence
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.previews import seeded_noise
from tbcm.sampling import student_angles, student_sample, to_pixels

SCHEDULES = [[], [1.5], [1.4], [1.3], [1.0], [0.8], [1.5, 1.4, 1.3], [1.45, 1.3, 1.1], [1.5, 1.3, 1.0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student")
    ap.add_argument("--n", type=int, default=100, help="images per digit")
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--shifts", default="", help="instead of the fixed list: the 2- and 4-step routes of each shift")
    args = ap.parse_args()
    b = load_bundle(args.student, expect_kind="student")
    student = Student(b.network, b.meta.sigma_d, b.meta.timestep_scale).eval()
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    prompts = [f"a handwritten digit {d}" for d in range(10)]
    cond = b.encoder.encode(prompts).repeat_interleave(args.n)
    noise = seeded_noise(args.n, 10, (b.meta.channels, b.meta.image_size, b.meta.image_size))
    labels = torch.arange(10).repeat_interleave(args.n)
    w = torch.full((noise.shape[0],), args.cfg)
    defaults = {tuple(student_angles(k)[1:-1]) for k in (2, 4)}
    schedules = SCHEDULES + [list(m) for m in sorted(defaults)]
    if args.shifts:
        schedules = [[]] + [student_angles(k, float(s))[1:-1] for s in args.shifts.split(",") for k in (2, 4)]
    print("| steps | intermediate angles (rad) | FID | adherence |\n|---|---|---|---|")
    for mids in schedules:
        angles = [math.pi / 2, *mids, 0.0]
        x0 = student_sample(student, cond, w, noise, angles, generator=torch.Generator().manual_seed(1))
        px = to_pixels(x0, student.sigma_d)
        tag = " (default)" if tuple(mids) in defaults else ""
        shown = ", ".join(f"{m:.2f}" for m in mids) or "-"
        print(f"| {len(angles) - 1} | {shown}{tag} | {ref(px):.2f} | {adherence(px, labels, clf):.1%} |")


if __name__ == "__main__":
    main()
