"""Where a digits student loses adherence: per requested digit, the share the classifier reads as
asked, and what the misread images are read as -- the teacher (16 steps) beside 1-step students.

    python benchmarks/adherence_by_digit.py STUDENT [STUDENT ...] [--cfg 1.5] [--teacher-cfg 1.0]

Same seeded noise as ``tbcm eval`` (seeds 0..n-1 per digit); each student on its own saved route.
"""

from __future__ import annotations

import argparse

import torch

from tbcm.evaluation.classifier import load_classifier
from tbcm.evaluation.metrics import predict
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.previews import student_samples, teacher_samples

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]


def row(name: str, images: torch.Tensor, n: int, clf) -> str:
    labels = torch.arange(10).repeat_interleave(n)
    pred = predict(images, clf)
    per = [float((pred[labels == d] == d).double().mean()) for d in range(10)]
    misread = torch.bincount(pred[pred != labels], minlength=10).tolist()
    return (f"| {name} | {float((pred == labels).double().mean()):.1%} | " + " | ".join(f"{p:.0%}" for p in per)
            + f" | {' '.join(str(m) for m in misread)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", help="student folders")
    ap.add_argument("--cfg", type=float, default=1.5, help="the students' guidance input")
    ap.add_argument("--teacher-cfg", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=1, help="student sampling steps")
    ap.add_argument("--n", type=int, default=100, help="images per digit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clf = load_classifier()
    teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
    print("| model | all | " + " | ".join(str(d) for d in range(10)) + " | misread as 0..9 (counts) |")
    print("|---|---|" + "---|" * 10 + "---|")
    images = torch.cat([teacher_samples(teacher, [p], args.teacher_cfg, 16, args.n, 2.5, 0) for p in PROMPTS])
    print(row(f"teacher, 16 steps, w={args.teacher_cfg:g}", images, args.n, clf), flush=True)
    for folder in args.students:
        b = load_bundle(folder, expect_kind="student")
        student = Student.from_bundle(b).eval()
        shift = float(b.meta.extra.get("shift", 2.5))
        images = torch.cat([student_samples(student, b.encoder, [p], args.cfg, args.steps, args.n, shift, 0)
                            for p in PROMPTS])
        print(row(f"{folder}, {args.steps} step(s), w={args.cfg:g}", images, args.n, clf), flush=True)


if __name__ == "__main__":
    main()
