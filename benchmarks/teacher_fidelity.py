"""How faithful is a student to its own teacher? Same prompt, same initial noise: the student's
1-step (and 2, 4-step) digits against the teacher's 16-step digits, as the mean squared pixel
difference (pixels in [-1, 1]) and the share of images whose classified digit agrees.

A student can have a *better* FID than its teacher by not following it (an over-guided teacher
has a poor FID); this tells faithfulness and quality apart.

    python benchmarks/teacher_fidelity.py RUN_DIR [RUN_DIR ...] [--n 100] [--cfg 4.5]
"""

from __future__ import annotations

import argparse
import json

import torch

from tbcm.evaluation.classifier import load_classifier
from tbcm.evaluation.evaluate import PROMPTS, find_student, run_teacher
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.previews import student_samples, teacher_samples


@torch.no_grad()
def fidelity(run: str, n: int, cfg: float | None, teacher_cache: dict) -> dict:
    student_dir, run_dir = find_student(run)
    bundle = load_bundle(student_dir, expect_kind="student")
    w = float(cfg if cfg is not None else bundle.meta.extra.get("default_cfg_scale", 4.5))
    shift = float(bundle.meta.extra.get("shift", 2.5))
    name = run_teacher(run_dir)
    key = (name, w, n)
    if key not in teacher_cache:
        teacher = Teacher.from_bundle(load_bundle(name, expect_kind="teacher"))
        teacher_cache[key] = torch.cat([teacher_samples(teacher, [p], w, 16, n, shift, 0) for p in PROMPTS])
    ref = teacher_cache[key]
    clf = load_classifier()
    student = Student.from_bundle(bundle).eval()
    out = {"run": run, "cfg": w}
    for k in (1, 2, 4):
        img = torch.cat([student_samples(student, bundle.encoder, [p], w, k, n, shift, 0) for p in PROMPTS])
        agree = (clf(img).argmax(1) == clf(ref).argmax(1)).float().mean()
        out[str(k)] = {"mse_to_teacher": float((img - ref).pow(2).mean()), "same_digit": float(agree)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--cfg", type=float, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache: dict = {}
    for run in args.runs:
        print(json.dumps(fidelity(run, args.n, args.cfg, cache)), flush=True)


if __name__ == "__main__":
    main()
