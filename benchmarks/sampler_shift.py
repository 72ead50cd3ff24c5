"""The few-step sampler's route shift, measured over many trained digits students (no training).

For each student and each shift, FID and adherence at 1, 2 and 4 steps on the same per-image seeds
(the initial noise and the re-noising of image j of digit i from seed i n + j, as `tbcm eval`); then, per shift, the mean and spread over
the students and how many keep "more steps are better" (FID at 2 <= 1 and at 4 <= 2).  The
2-step route of shift ``s`` has its middle angle at ``arctan(s)`` (2.5 -> 1.19 rad, 1 -> pi/4).

    python benchmarks/sampler_shift.py runs/recipe_ablation/*_low_s* --cfg 1.5 --shifts 2.5,1,0.7

Students chosen to tune the shift should not be the ones that confirm it: pass others.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference, adherence
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.previews import image_generators, independent_noise
from tbcm.sampling import student_angles, student_sample, to_pixels

STEPS = (1, 2, 4)


class DigitsProbe:
    """One digits student on fixed per-image seeds (image j of digit i: i n + j, its initial noise
    and its re-noising) and a fixed guidance input, scored on any route: :meth:`score`
    ``(angles) -> (FID, adherence)``."""

    def __init__(self, folder: str, n: int, cfg: float, clf, ref):
        b = load_bundle(folder, expect_kind="student")
        self.saved_shift = float(b.meta.extra.get("shift", 2.5))
        self.student = Student(b.network, b.meta.sigma_d, b.meta.timestep_scale).eval()
        self.cond = b.encoder.encode([f"a handwritten digit {d}" for d in range(10)]).repeat_interleave(n)
        self.shape, self.n = (b.meta.channels, b.meta.image_size, b.meta.image_size), n
        self.labels = torch.arange(10).repeat_interleave(n)
        self.w = torch.full((10 * n,), cfg)
        self.clf, self.ref = clf, ref

    def score(self, angles: list[float]) -> tuple[float, float]:
        gens = image_generators(10, self.n)  # every image its own seed, as `tbcm eval` draws them
        x0 = student_sample(self.student, self.cond, self.w, independent_noise(gens, self.shape), angles, generator=gens)
        px = to_pixels(x0, self.student.sigma_d)
        return self.ref(px), adherence(px, self.labels, self.clf)


def score(folder: str, shifts: list[float], n: int, cfg: float, clf, ref) -> dict:
    """``{shift: {steps: (fid, adherence)}}`` for the student in ``folder``."""
    probe = DigitsProbe(folder, n, cfg, clf, ref)
    return {shift: {steps: probe.score(student_angles(steps, shift)) for steps in STEPS} for shift in shifts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", help="student folders (RUN/student) or run folders")
    ap.add_argument("--shifts", default="2.5,1,0.7")
    ap.add_argument("--cfg", type=float, default=1.5, help="guidance input")
    ap.add_argument("--n", type=int, default=100, help="images per digit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shifts = [float(s) for s in args.shifts.split(",")]
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    results = {}
    print("| student | shift | 1 step | 2 steps | 4 steps | adh. 1 / 2 / 4 |\n|---|---|---|---|---|---|")
    for folder in args.students:
        folder = folder if folder.rstrip("/").endswith("student") else folder.rstrip("/") + "/student"
        results[folder] = score(folder, shifts, args.n, args.cfg, clf, ref)
        for shift, r in results[folder].items():
            print(f"| {folder} | {shift:g} | " + " | ".join(f"{r[k][0]:.2f}" for k in STEPS)
                  + " | " + " / ".join(f"{r[k][1]:.1%}" for k in STEPS) + " |", flush=True)
    print(f"\nOver {len(results)} students, guidance input {args.cfg:g}, {args.n} images per digit:\n")
    print("| shift | 2-step middle angle | 1 step FID | 2 steps | 4 steps | adh. 1 / 2 / 4 | 2 <= 1 | 4 <= 2 |")
    print("|---|---|---|---|---|---|---|---|")

    def ms(vals):
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"

    for shift in shifts:
        per = [r[shift] for r in results.values()]
        fid = {k: [p[k][0] for p in per] for k in STEPS}
        adh = {k: statistics.mean(p[k][1] for p in per) for k in STEPS}
        two = sum(p[2][0] <= p[1][0] for p in per)
        four = sum(p[4][0] <= p[2][0] for p in per)
        print(f"| {shift:g} | {student_angles(2, shift)[1]:.2f} | {ms(fid[1])} | {ms(fid[2])} | {ms(fid[4])} | "
              + " / ".join(f"{adh[k]:.1%}" for k in STEPS) + f" | {two}/{len(per)} | {four}/{len(per)} |")


if __name__ == "__main__":
    main()
