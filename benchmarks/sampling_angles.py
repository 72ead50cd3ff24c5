"""Does the multi-step sampler's intermediate schedule explain its quality? Evaluate one trained
digits student at 1 step and at 2 and 4 steps with several intermediate angles (no training).

    python benchmarks/sampling_angles.py RUN_DIR/student [--n 100] [--cfg 4.5]

The shifted routes of several shifts over many students: benchmarks/sampler_shift.py.

Same initial noise for every schedule (seeds 0..n-1 per digit) and the same re-noising seed;
FID on the digit classifier's features against the held-out digits, and adherence.
"""

from __future__ import annotations

import argparse
import math

from sampler_shift import DigitsProbe
from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference
from tbcm.sampling import student_angles

SCHEDULES = [[], [1.5], [1.4], [1.3], [1.0], [0.8], [1.5, 1.4, 1.3], [1.45, 1.3, 1.1], [1.5, 1.3, 1.0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student")
    ap.add_argument("--n", type=int, default=100, help="images per digit")
    ap.add_argument("--cfg", type=float, default=4.5)
    args = ap.parse_args()
    clf = load_classifier()
    probe = DigitsProbe(args.student, args.n, args.cfg, clf, FIDReference(digits_split().heldout_images, clf))
    # "(default)": the routes of the shift saved with the student (what tbcm sample uses)
    defaults = {tuple(student_angles(k, probe.saved_shift)[1:-1]) for k in (2, 4)}
    print("| steps | intermediate angles (rad) | FID | adherence |\n|---|---|---|---|")
    for mids in SCHEDULES + [list(m) for m in sorted(defaults)]:
        fid, adh = probe.score([math.pi / 2, *mids, 0.0])
        tag = " (default)" if tuple(mids) in defaults else ""
        shown = ", ".join(f"{m:.2f}" for m in mids) or "-"
        print(f"| {len(mids) + 1} | {shown}{tag} | {fid:.2f} | {adh:.1%} |")

if __name__ == "__main__":
    main()
