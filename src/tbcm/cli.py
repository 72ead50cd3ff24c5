"""The ``tbcm`` command: a thin layer over the library.

    tbcm distill --out DIR [--config FILE] [--overwrite] [key=value ...]
    tbcm distill --resume DIR [key=value ...]
    tbcm trajectories --out DIR [--config FILE] [key=value ...]
    tbcm sample --student DIR (--prompt TEXT | --prompts FILE) [--steps N] [--n N] [--seed S] [--device D] --out X.png
                [--cfg W] [--shift S] [--fresh-noise A] [--routes STEPS:A/B/..|none]
    tbcm teacher train --out DIR [--data PATH] [--config FILE] [--overwrite] [key=value ...]
    tbcm eval DIR [--steps 1,2,4] [--n N] [--teacher 16,32] [--cfg 4.5] [--seed S | --split tune|confirm --draw K]
              [--teacher-copied] [--teacher-best [--best-steps ..]] [--fidelity] [--full] [--json]
    tbcm eval DIR --fidelity [--prompts FILE] [--inception FILE] [--n N] [--json]     (Sana, FLUX, SD3 students)
    tbcm eval DIR --reference ROOT --inception FILE --clip DIR [--steps 1,2,4] [--n N] [--batch B] [--fidelity] [--json]
    tbcm classifier train --out DIR [--steps N] [--seed S] [--overwrite]
    tbcm scenes judge-train --out DIR [--steps N] [--seed S] [--overwrite]
    tbcm judge train --data X.npz --reference Y.npz --out TEACHER/judge [--floor TRAIN.npz]
                     [--prompt-template T] [--steps N] [--seed S] [--overwrite]
    tbcm export RUN --format diffusers --out DIR [--overwrite]
    tbcm tune-sampler RUN [--images N] [--draw K] [--steps 2,4] [--shifts ..] [--restarts ..] [--fresh ..] [--max-angle A]
                      [--device D] [--dry-run]

Bad input is one line on stderr and exit code 2; nothing is written or overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_eval import cmd_eval
from .errors import TrainingStopped, UserError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tbcm", description="Image-free few-step distillation (TBCM).")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("distill", help="distill a teacher into a 1-4 step student from a prompts file")
    d.set_defaults(func=cmd_distill)
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="output folder (refused if it exists and is not empty)")
    where.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint "
                       "(its config.yaml, plus any key=value, e.g. steps=2000)")
    d.add_argument("--config", help="YAML config (default: the embedded default: built-in teacher and prompts)")
    d.add_argument("--overwrite", action="store_true",
                   help="clear an existing non-empty --out (only after the config, teacher and prompts checked out)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 optim.lr=1e-4")

    tr = sub.add_parser("trajectories", help="write teacher trajectory pairs to disk (a cache training can read)")
    tr.set_defaults(func=cmd_trajectories)
    tr.add_argument("--out", required=True, help="cache folder; rerunning skips the shards already there")
    tr.add_argument("--config", help="YAML config (the distill config: teacher, prompts, pairs.*, cache.*)")
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument("overrides", nargs="*", metavar="key=value")

    s = sub.add_parser("sample", help="generate images with a distilled student")
    s.set_defaults(func=cmd_sample)
    s.add_argument("--student", required=True, help="a student folder (DIR/student of a distill run, or the run DIR)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help="a text file, one prompt per line")
    s.add_argument("--steps", type=int, default=1, help="sampling steps (1, 2, 4, ...)")
    s.add_argument("--n", type=int, default=1, help="images per prompt (grid columns)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first image; image j uses seed + j")
    s.add_argument("--cfg", type=float, default=None, help="guidance scale input (default: the student's)")
    _sampler_flags(s)
    s.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    s.add_argument("--out", required=True, help="output PNG (rows: prompts, columns: seeds)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the student runs (auto: cuda if available); prompts are encoded on the CPU")

    t = sub.add_parser("teacher", help="the built-in kind of teacher")
    tsub = t.add_subparsers(dest="teacher_command", required=True)
    tt = tsub.add_parser("train", help="train a text-conditioned flow-matching teacher on images with prompts")
    tt.set_defaults(func=cmd_teacher_train)
    tt.add_argument("--out", required=True, help="output teacher folder (what `tbcm distill teacher=DIR` takes)")
    tt.add_argument("--data", help="'digits' (default: the 1,197 train digits, none of tbcm eval's FID "
                    "reference), 'digits_all' (all 1,797), 'scenes', a folder of images (class subfolders), or an .npz")
    tt.add_argument("--config", help="YAML config (see configs/teacher_digits.yaml)")
    tt.add_argument("--overwrite", action="store_true")
    tt.add_argument("--no-progress", action="store_true")
    tt.add_argument("overrides", nargs="*", metavar="key=value")

    dc = sub.add_parser("discrepancy", help="equivalent noise of trajectory states vs forward-noised real data, by t")
    dc.set_defaults(func=cmd_discrepancy)
    dc.add_argument("--out", required=True, help="folder for discrepancy.md, .json and .png")
    dc.add_argument("--config", help="YAML config (the distill config: teacher, prompts, forward.data, pairs.*)")
    dc.add_argument("--trajectories", type=int, default=256, help="teacher trajectories to roll out")
    dc.add_argument("--bins", type=int, default=6, help="bins of t over (0, pi/2)")
    dc.add_argument("--overwrite", action="store_true")
    dc.add_argument("overrides", nargs="*", metavar="key=value")

    e = sub.add_parser("eval", help="FID and prompt adherence of a digits or scenes student, its teacher as copied "
                       "and at its best, fidelity to the teacher (any family), the data floor; with --reference FID "
                       "and CLIP score on an MJHQ-30k style folder")
    e.set_defaults(func=cmd_eval)
    e.add_argument("dir", metavar="DIR", help="a `tbcm distill` run folder or its student/ folder")
    e.add_argument("--steps", default="1,2,4", help="student step counts, comma-separated (default 1,2,4)")
    e.add_argument("--n", type=int, default=None,
                   help="images per digit (default 100), per scenes prompt (default 32) or per prompt with --fidelity "
                   "on another family (default 1); with --reference the first N reference images (default all)")
    e.add_argument("--teacher", help="also the run's teacher (config.yaml, else builtin) at these step counts, e.g. "
                   "16,32, on the route family of the student's training rollouts")
    e.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the student's)")
    e.add_argument("--teacher-cfg", default=None, help="sweep the teacher's guidance at the --teacher step counts "
                   "(default 16), e.g. 0.5,1,1.25,1.5,2,3,4.5; reports its best and the student-best / teacher-best ratio")
    e.add_argument("--teacher-interval", default=None, metavar="LO,HI|none", help="guide the --teacher rows only at "
                   "angles in (LO, HI] rad, 'none' at every angle (default: the interval the student was distilled with)")
    e.add_argument("--student-cfg", default=None, help="sweep the student's guidance input (default with "
                   "--teacher-cfg: the scales it was trained on)")
    e.add_argument("--seed", type=int, default=None, help="image j of prompt i uses seed + i n + j, for its noise "
                   "and its re-noising (with --reference image i uses seed + i); default 0")
    e.add_argument("--split", metavar="tune|confirm", default=None, help="take the images of a fixed "
                   "evaluation draw instead of --seed: choose on tune, report confirm (tbcm.evaluation.splits)")
    e.add_argument("--draw", type=int, default=None, help="with --split: the draw, 0-39 (default 0)")
    e.add_argument("--teacher-copied", action="store_true", help="also the teacher the student copies: the route, "
                   "guidance interval and guidance of its training rollouts (and over the scales it was trained on)")
    e.add_argument("--teacher-best", action="store_true", help="also the teacher at its best over --best-steps, "
                   "--best-shift, --best-cfg, --best-interval, chosen on a tune draw, scored on this one "
                   "(and the teacher as copied); the headline ratio is against it")
    e.add_argument("--best-steps", default="16,32,64,128", help="--teacher-best: step counts (default 16,32,64,128)")
    e.add_argument("--best-shift", default="1,2.5", help="--teacher-best: route shifts (default 1,2.5)")
    e.add_argument("--best-cfg", default=None, help="--teacher-best: guidance scales (default: 1 and the scales the "
                   "student was trained on)")
    e.add_argument("--best-interval", default="run,none", help="--teacher-best: guidance intervals, each 'run' (the "
                   "student's), 'none' (every angle) or LO:HI rad (default run,none)")
    e.add_argument("--best-draw", type=int, default=0, help="--teacher-best: the tune draw it is chosen on (default 0)")
    e.add_argument("--fidelity", action="store_true", help="also fidelity to the teacher as copied, no data needed: "
                   "paired error from the same noise and FID against the teacher's samples (any family)")
    e.add_argument("--full", action="store_true", help="--teacher-best and --fidelity (and so the teacher as copied)")
    e.add_argument("--prompts", metavar="FILE", help="--fidelity of a student that is neither digits nor scenes: "
                   "its prompts (default: the first 128 of the run's prompts file)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the networks run (auto: cuda if available)")
    _sampler_flags(e)
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.add_argument("--reference", metavar="ROOT", help="MJHQ-30k style folder (meta_data.json, <category>/<id>.jpg): "
                   "FID and CLIP score of the student on its prompts")
    e.add_argument("--inception", metavar="FILE", help="local FID Inception weights "
                   "(pt_inception-2015-12-05-6726825d.pth): with --reference, or for --fidelity of a latent student")
    e.add_argument("--clip", metavar="DIR", help="with --reference: local CLIP folder (e.g. openai/clip-vit-large-patch14)")
    e.add_argument("--batch", type=int, default=None, help="images per sampler call (default 128; 16 with "
                   "--reference or for a latent student)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")

    x = sub.add_parser("export", help="write a student as a diffusers pipeline folder (Sana: SanaSprintPipeline, "
                       "FLUX: FluxPipeline, SD3: StableDiffusion3Pipeline)")
    x.set_defaults(func=cmd_export)
    x.add_argument("run", metavar="RUN", help="a `tbcm distill` run folder or its student/ folder")
    x.add_argument("--format", choices=["diffusers"], default="diffusers", help="output format (diffusers)")
    x.add_argument("--out", required=True, help="output pipeline folder")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out (after the new one is complete)")

    ts = sub.add_parser("tune-sampler", help="choose a student's few-step sampler by its fidelity to its teacher "
                        "on tune noise (no data, no judge) and save it with the student")
    ts.set_defaults(func=cmd_tune_sampler)
    ts.add_argument("run", metavar="RUN", help="a `tbcm distill` run folder or its student/ folder")
    ts.add_argument("--images", type=int, default=None, help="tune images, spread over the run's prompts "
                    "(default 512)")
    ts.add_argument("--draw", type=int, default=0, help="the tune draw (tbcm.evaluation.splits; default 0)")
    ts.add_argument("--steps", default=None, help="step counts whose route is chosen (default 2,4)")
    ts.add_argument("--shifts", default=None, help="shifted routes tried (default 0.1,0.25,0.5,1,2.5,6)")
    ts.add_argument("--restarts", default=None, help="restart routes tried at >= 3 steps, by angle in rad "
                    "(default 0.1,0.25,0.5,0.8; 'none': no restart routes)")
    ts.add_argument("--fresh", default=None, help="re-noising shares tried (default 0,0.5,1)")
    ts.add_argument("--max-angle", type=float, default=None, help="choose only routes whose middle angles are all "
                    "at or below this, in rad (default 1.0; 1.5708 = no cap)")
    ts.add_argument("--device", default="auto", help="auto (CUDA if any), cpu or cuda[:N]")
    ts.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    ts.add_argument("--no-progress", action="store_true", help="no progress bars")

    c = sub.add_parser("classifier", help="the digit classifier behind tbcm eval")
    csub = c.add_subparsers(dest="classifier_command", required=True)
    ct = csub.add_parser("train", help="train the digit classifier (FID features, adherence) on the train split")
    ct.set_defaults(func=cmd_classifier_train)
    ct.add_argument("--out", required=True, help="output folder (classifier.safetensors + classifier.yaml)")
    ct.add_argument("--steps", type=int, default=1500)
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--overwrite", action="store_true")
    ct.add_argument("--no-progress", action="store_true")

    sc = sub.add_parser("scenes", help="the scenes miniature (32x32 compositional prompts): its judge")
    ssub = sc.add_subparsers(dest="scenes_command", required=True)
    sj = ssub.add_parser("judge-train", help="train the scenes judge (attribute heads, FID features) on fresh scenes")
    sj.set_defaults(func=cmd_scenes_judge_train)
    sj.add_argument("--out", required=True, help="output folder (judge.safetensors + judge.yaml)")
    sj.add_argument("--steps", type=int, default=3000)
    sj.add_argument("--seed", type=int, default=0)
    sj.add_argument("--overwrite", action="store_true")
    sj.add_argument("--no-progress", action="store_true")

    j = sub.add_parser("judge", help="a judge (FID features, adherence) for a teacher trained on labelled images")
    jsub = j.add_subparsers(dest="judge_command", required=True)
    jt = jsub.add_parser("train", help="train a label classifier on held-out images; in TEACHER/judge, tbcm eval "
                         "scores every student of TEACHER with it")
    jt.set_defaults(func=cmd_judge_train)
    jt.add_argument("--data", required=True, help="labelled images the teacher never saw (.npz or class folders)")
    jt.add_argument("--reference", required=True, help="other held-out labelled images: the FID reference")
    jt.add_argument("--out", required=True, help="output folder; TEACHER/judge to judge that teacher's students")
    jt.add_argument("--floor", default=None, help="the teacher's training images: the data floor (optional)")
    jt.add_argument("--prompt-template", default="{label}", help="prompt of a label, as the teacher was trained "
                    "(default: the label itself)")
    jt.add_argument("--steps", type=int, default=3000)
    jt.add_argument("--seed", type=int, default=0)
    jt.add_argument("--overwrite", action="store_true")
    jt.add_argument("--no-progress", action="store_true")
    return p


def _sampler_flags(p: argparse.ArgumentParser) -> None:
    """The student sampler's overrides ``tbcm sample`` and ``tbcm eval`` share (with ``--cfg``)."""
    p.add_argument("--fresh-noise", type=float, default=None, help="multi-step re-noising: 1 = fresh noise (sCM, "
                   "SanaSprintPipeline), 0 = the noise implied by the state, between = a mix (default: the one "
                   "saved with the student)")
    p.add_argument("--shift", type=float, default=None, help="the student's route shift (default: the one saved "
                   "with it); its 2-step middle angle is arctan(shift) rad")
    p.add_argument("--routes", default=None, metavar="STEPS:A/B/..,..|none", help="explicit routes (middle "
                   "angles in rad) for some step counts, e.g. 4:0.337/0.116/0.04; 'none': the shifted route at "
                   "every count (default: the routes saved with the student, unless --shift is given)")


def _sampler_overrides(args) -> dict:
    """``--cfg`` / ``--shift`` / ``--fresh-noise`` / ``--routes`` as
    :meth:`tbcm.sampler.StudentSampler.overridden` keywords (``None``: the student's own), checked
    here so bad values are refused before any model loads."""
    from .sampler import StudentSampler
    from .sampling import parse_routes

    overrides = {"cfg_scale": args.cfg, "shift": args.shift, "fresh_noise": args.fresh_noise,
                 "routes": None if args.routes is None else parse_routes(args.routes)}
    StudentSampler().overridden(**overrides)  # raises UserError on a bad value
    return overrides


def cmd_distill(args) -> None:
    from .config import DistillConfig, load_config
    from .distributed import shutdown
    from .train import Distiller
    from .outputs import check_output_dir

    if args.resume:
        run_dir = Path(args.resume)
        if args.config:
            raise UserError("--resume takes its config from DIR/config.yaml: drop --config (override keys as key=value)")
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} has no config.yaml, it is not a tbcm distill run: pass the --out of a run")
        cfg = load_config(DistillConfig, run_dir / "config.yaml", args.overrides)
        distiller = Distiller(cfg)
        out = distiller.run(run_dir, resume=True, progress=not args.no_progress)
    else:
        check_output_dir(args.out, args.overwrite)
        cfg = load_config(DistillConfig, args.config, args.overrides)
        distiller = Distiller(cfg)
        out = distiller.run(args.out, overwrite=args.overwrite, progress=not args.no_progress)
    if distiller.dist.is_main:
        print(f"student: {out / 'student'}\nsamples: {out / 'samples.png'}\nmetrics: {out / 'metrics.csv'}\n"
              f"steps: {distiller.step} ({distiller.skipped} skipped), peak memory: {distiller.peak_mem_mb:.0f} MB")
    del distiller  # free the DDP reducer / FSDP state before the process group goes
    shutdown()


def cmd_trajectories(args) -> None:
    from .config import DistillConfig, load_config
    from .distributed import shutdown
    from .trajectories import write_cache_from_config

    cfg = load_config(DistillConfig, args.config, args.overrides)
    out = write_cache_from_config(cfg, args.out, progress=not args.no_progress)
    shutdown()
    print(f"trajectory cache: {out}\ntrain on it: tbcm distill --out RUN source=cache cache.dir={out}")


def cmd_teacher_train(args) -> None:
    from .config import TeacherTrainConfig, load_config
    from .outputs import check_output_dir
    from .teacher_train import train_teacher

    check_output_dir(args.out, args.overwrite)
    overrides = list(args.overrides) + ([f"data={args.data}"] if args.data else [])
    cfg = load_config(TeacherTrainConfig, args.config, overrides)
    out = train_teacher(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"teacher: {out}\nsamples: {out / 'samples.png'}\nuse it: tbcm distill --out RUN teacher={out}")


def cmd_discrepancy(args) -> None:
    from .analysis import write_report
    from .config import DistillConfig, load_config
    from .outputs import check_output_dir

    if args.trajectories < 2 or args.bins < 1:
        raise UserError(f"--trajectories must be >= 2 and --bins >= 1 (got {args.trajectories}, {args.bins})")
    check_output_dir(args.out, args.overwrite)
    cfg = load_config(DistillConfig, args.config, args.overrides)
    write_report(cfg, args.out, args.trajectories, args.bins, args.overwrite)
    print((Path(args.out) / "discrepancy.md").read_text().rstrip())
    print(f"wrote {Path(args.out) / 'discrepancy.md'}, .json and .png")


def cmd_sample(args) -> None:
    import torch

    from .data import read_prompts_file
    from .grids import grid_image, save_png
    from .distributed import pick_device
    from .evaluation.evaluate import find_student
    from .models.bundle import load_bundle
    from .models.student import Student
    from .previews import student_samples
    from .sampler import StudentSampler

    if args.steps < 1 or args.n < 1:
        raise UserError(f"--steps and --n must be at least 1 (got --steps {args.steps} --n {args.n})")
    if args.scale < 1:
        raise UserError(f"--scale must be at least 1 (got {args.scale})")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    overrides = _sampler_overrides(args)
    student_dir, _ = find_student(args.student)  # a run folder or a student folder
    bundle = load_bundle(student_dir, expect_kind="student")
    sampler = StudentSampler.from_extra(bundle.meta.extra).overridden(**overrides)
    prompts = [args.prompt] if args.prompt is not None else read_prompts_file(args.prompts)
    if hasattr(bundle.encoder, "token_ids"):
        bundle.encoder.token_ids(prompts)  # validate every prompt before generating anything
    student = Student.from_bundle(bundle).eval().to(pick_device(args.device))
    with torch.no_grad():
        pixels = student_samples(student, bundle.encoder, prompts, sampler, args.steps, args.n, first_seed=args.seed,
                                 decode=bundle.decode)
    save_png(grid_image(pixels, rows=len(prompts), scale=args.scale), out)  # atomic
    angles = ", ".join(f"{a:.3g}" for a in sampler.angles(args.steps))
    print(f"wrote {out} ({len(prompts)} prompt(s) x {args.n}, {args.steps} step(s) at angles {angles} rad, "
          f"cfg {sampler.cfg_scale:g}, fresh noise {sampler.fresh_noise:g})")


def cmd_export(args) -> None:
    from .export import export_diffusers

    out, note = export_diffusers(args.run, args.out, overwrite=args.overwrite)
    print(f"exported: {out}\n{note}")


def cmd_tune_sampler(args) -> None:
    from dataclasses import replace

    from .cli_eval import _counts, _scales
    from .sampler_tuning import DEFAULT_IMAGES, SearchSpace, tune_saved_student

    space = SearchSpace()
    if args.steps is not None:
        space = replace(space, steps=tuple(_counts("--steps", args.steps)))
    if args.shifts is not None:
        space = replace(space, shifts=tuple(_scales("--shifts", args.shifts, "route shifts")))
    if args.restarts is not None:
        space = replace(space, restarts=() if args.restarts.strip() == "none"
                        else tuple(_scales("--restarts", args.restarts, "angles")))
    if args.fresh is not None:
        space = replace(space, fresh_noise=tuple(_scales("--fresh", args.fresh, "re-noising shares")))
    if args.max_angle is not None:
        space = replace(space, max_angle=args.max_angle)
    result, record = tune_saved_student(args.run, space, DEFAULT_IMAGES if args.images is None else args.images, args.draw,
                                        device=args.device, progress=not args.no_progress, write=not args.dry_run)
    print(format_tuning(record))
    if not args.dry_run:
        print(f"saved with the student: {record['student']}/model.yaml (extra.sampler); every candidate: "
              f"{record['written_to']}")


def format_tuning(record: dict) -> str:
    """Lines: per step count the chosen route and its score beside the saved sampler's."""
    chosen, before = record["chosen"], record["before"]
    lines = [f"tune draw {record['draw']} ({record['images']} images), paired latent error to the teacher: "
             f"re-noising share {before['fresh_noise']:g} -> {chosen['fresh_noise']:g}"]
    for n, mids in chosen["routes"].items():
        lines.append(f"  {n} steps: middle angles {', '.join(f'{a:.3f}' for a in mids)} rad "
                     f"(score {chosen['scores'][n]:.4g}; saved sampler {chosen['before_scores'][n]:.4g})"
                     + ("; spectrum vs the teacher, low to high frequency: "
                        + " ".join(f"{v:.2f}" for v in chosen["spectrum"][n]) if "spectrum" in chosen else ""))
    return "\n".join(lines)


def cmd_classifier_train(args) -> None:
    from .evaluation import train_classifier
    from .evaluation.classifier import load_classifier

    out = train_classifier(args.out, args.steps, args.seed, progress=not args.no_progress, overwrite=args.overwrite)
    acc = load_classifier(out).meta["heldout_accuracy"]
    print(f"classifier: {out}\nheld-out accuracy: {acc:.2%}")


def cmd_scenes_judge_train(args) -> None:
    from .scenes.judge import load_judge, train_judge

    out = train_judge(args.out, args.steps, args.seed, progress=not args.no_progress, overwrite=args.overwrite)
    acc = load_judge(out).meta["accuracy"]
    print(f"scenes judge: {out}\nexact accuracy on {acc['images']} fresh scenes: {acc['exact']:.2%} "
          f"({acc['exact_with_noise']:.2%} with pixel noise)")


def cmd_judge_train(args) -> None:
    from .evaluation.labelled import load_judge_classifier, train_judge

    out = train_judge(args.data, args.reference, args.out, args.prompt_template, args.floor, args.steps, args.seed,
                      progress=not args.no_progress, overwrite=args.overwrite)
    meta = load_judge_classifier(out).meta
    print(f"judge: {out} ({len(meta['prompts'])} prompts, {meta['shape'][0]}x{meta['shape'][1]}x{meta['shape'][2]})\n"
          f"accuracy on the {meta['data']['reference_images']} reference images: {meta['reference_accuracy']:.2%}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come before, between or after flags, as users type them: argparse
    # stops the positional list at the first flag, so the ones after it arrive as extras
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except UserError as exc:
        print(f"tbcm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingStopped as exc:
        print(f"tbcm: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tbcm: interrupted; outputs that existed before are untouched", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
