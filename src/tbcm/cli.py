"""The ``tbcm`` command: a thin layer over the library.

    tbcm distill --out DIR [--config FILE] [--overwrite] [key=value ...]
    tbcm sample --student DIR (--prompt TEXT | --prompts FILE) [--steps N] [--n N] [--seed S] --out X.png
    tbcm teacher train --out DIR [--data PATH] [--config FILE] [--overwrite] [key=value ...]

Bad input is one line on stderr and exit code 2; nothing is written or overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .errors import UserError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tbcm", description="Image-free few-step distillation (TBCM).")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("distill", help="distill a teacher into a 1-4 step student from a prompts file")
    d.add_argument("--out", required=True, help="output folder (refused if it exists and is not empty)")
    d.add_argument("--config", help="YAML config (default: the embedded default: built-in teacher and prompts)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing --out once the run succeeds")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 optim.lr=1e-4")

    s = sub.add_parser("sample", help="generate images with a distilled student")
    s.add_argument("--student", required=True, help="a student folder (DIR/student of a distill run, or the run DIR)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help="a text file, one prompt per line")
    s.add_argument("--steps", type=int, default=1, help="sampling steps (1, 2, 4, ...)")
    s.add_argument("--n", type=int, default=1, help="images per prompt (grid columns)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first image; image j uses seed + j")
    s.add_argument("--cfg", type=float, default=None, help="guidance scale input (default: the run's)")
    s.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    s.add_argument("--out", required=True, help="output PNG (rows: prompts, columns: seeds)")

    t = sub.add_parser("teacher", help="the built-in kind of teacher")
    tsub = t.add_subparsers(dest="teacher_command", required=True)
    tt = tsub.add_parser("train", help="train a text-conditioned flow-matching teacher on images with prompts")
    tt.add_argument("--out", required=True, help="output teacher folder (what `tbcm distill teacher=DIR` takes)")
    tt.add_argument("--data", help="'digits' (default), a folder of images (class subfolders), or an .npz")
    tt.add_argument("--config", help="YAML config (see configs/teacher_digits.yaml)")
    tt.add_argument("--overwrite", action="store_true")
    tt.add_argument("--no-progress", action="store_true")
    tt.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def cmd_distill(args) -> None:
    from .config import DistillConfig, load_config
    from .distill import Distiller
    from .outputs import check_output_dir

    check_output_dir(args.out, args.overwrite)
    cfg = load_config(DistillConfig, args.config, args.overrides)
    out = Distiller(cfg).run(args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"student: {out / 'student'}\nsamples: {out / 'samples.png'}\nmetrics: {out / 'metrics.csv'}")


def cmd_teacher_train(args) -> None:
    from .config import TeacherTrainConfig, load_config
    from .outputs import check_output_dir
    from .teacher_train import train_teacher

    check_output_dir(args.out, args.overwrite)
    overrides = list(args.overrides) + ([f"data={args.data}"] if args.data else [])
    cfg = load_config(TeacherTrainConfig, args.config, overrides)
    out = train_teacher(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"teacher: {out}\nsamples: {out / 'samples.png'}\nuse it: tbcm distill --out RUN teacher={out}")


def cmd_sample(args) -> None:
    import torch

    from .data import read_prompts_file
    from .grids import grid_image
    from .models.bundle import load_bundle
    from .models.student import Student
    from .previews import student_samples

    if args.steps < 1 or args.n < 1:
        raise UserError(f"--steps and --n must be at least 1 (got --steps {args.steps} --n {args.n})")
    if args.scale < 1:
        raise UserError(f"--scale must be at least 1 (got {args.scale})")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    student_dir = Path(args.student)
    if (student_dir / "student" / "model.yaml").is_file():
        student_dir = student_dir / "student"  # a run folder was given
    bundle = load_bundle(student_dir, expect_kind="student")
    prompts = [args.prompt] if args.prompt is not None else read_prompts_file(args.prompts)
    bundle.encoder.token_ids(prompts)  # validate every prompt before generating anything
    student = Student(bundle.network, bundle.meta.sigma_d, bundle.meta.timestep_scale, bundle.logvar_head).eval()
    cfg_scale = args.cfg if args.cfg is not None else float(bundle.meta.extra.get("default_cfg_scale", 4.5))
    shift = float(bundle.meta.extra.get("shift", 2.5))
    with torch.no_grad():
        pixels = student_samples(student, bundle.encoder, prompts, cfg_scale, args.steps, args.n, shift, args.seed)
    image = grid_image(pixels, rows=len(prompts), scale=args.scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        image.save(tmp)
        os.replace(tmp, out)  # atomic: an existing file is never left half-written
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {out} ({len(prompts)} prompt(s) x {args.n}, {args.steps} step(s), cfg {cfg_scale})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "distill":
            cmd_distill(args)
        elif args.command == "sample":
            cmd_sample(args)
        elif args.command == "teacher" and args.teacher_command == "train":
            cmd_teacher_train(args)
    except UserError as exc:
        print(f"tbcm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tbcm: interrupted; outputs that existed before are untouched", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
