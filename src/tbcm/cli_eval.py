"""``tbcm eval``'s command: its flags turned into :func:`tbcm.evaluation.evaluate.evaluate` (or the
MJHQ-30k path's :func:`tbcm.evaluation.realscale.evaluate_realscale`) and printed."""

from __future__ import annotations

from .errors import UserError


def _counts(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} {text!r} is not a comma-separated list of step counts: e.g. {option} 1,2,4") from None
    if any(v < 1 for v in values):
        raise UserError(f"{option} {text!r} has a count below 1: pass step counts >= 1, e.g. {option} 1,2,4")
    return values


def _scales(option: str, text: str, what: str = "guidance scales") -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r} is not a comma-separated list of {what}: e.g. {option} 1,1.5,2") from None


def cmd_eval(args) -> None:
    import json

    if args.full:  # with --reference there is no judge to find the teacher's best with: fidelity alone
        args.fidelity, args.teacher_best = True, args.reference is None
    if not args.teacher_best:
        for flag, value, default in (("--best-steps", args.best_steps, "16,32,64,128"),
                                     ("--best-shift", args.best_shift, "1,2.5"), ("--best-cfg", args.best_cfg, None),
                                     ("--best-interval", args.best_interval, "run,none"),
                                     ("--best-draw", args.best_draw, 0)):
            if value != default:
                raise UserError(f"{flag} sets the search of --teacher-best: add --teacher-best (or drop {flag})")
    if args.reference is not None:
        return cmd_eval_realscale(args)
    if args.clip is not None:
        raise UserError("--clip belongs to the real-scale evaluation: add --reference ROOT (or drop --clip)")
    if args.inception is not None and not args.fidelity:
        raise UserError("--inception belongs to the real-scale evaluation: add --reference ROOT, or --fidelity "
                        "(FID of a latent student against its teacher), or drop --inception")
    from .evaluation import evaluate, format_table
    from .evaluation.teachers import TeacherGrid
    from .sampling import parse_routes

    grid = None
    if args.teacher_best:
        grid = TeacherGrid(steps=tuple(_counts("--best-steps", args.best_steps)),
                           shifts=tuple(_scales("--best-shift", args.best_shift, "route shifts")),
                           cfgs=tuple(_scales("--best-cfg", args.best_cfg)) if args.best_cfg else None,
                           intervals=tuple(v.strip() for v in args.best_interval.split(",") if v.strip()),
                           draw=args.best_draw)
    prompts = None
    if args.prompts is not None:
        from .data import read_prompts_file

        prompts = read_prompts_file(args.prompts)
    inception = None
    if args.inception is not None:
        from .evaluation.inception import load_inception

        inception = load_inception(args.inception)
    result = evaluate(args.dir, _counts("--steps", args.steps), args.n,
                      _counts("--teacher", args.teacher) if args.teacher else [], args.cfg, args.seed,
                      teacher_cfgs=_scales("--teacher-cfg", args.teacher_cfg) if args.teacher_cfg else [],
                      student_cfgs=_scales("--student-cfg", args.student_cfg) if args.student_cfg else None,
                      fresh_noise=args.fresh_noise, student_shift=args.shift,
                      teacher_interval=_interval(args.teacher_interval),
                      student_routes=None if args.routes is None else parse_routes(args.routes),
                      teacher_copied=args.teacher_copied, teacher_best=grid, fidelity=args.fidelity,
                      split=args.split, draw=args.draw, prompts=prompts, inception=inception, batch=args.batch,
                      device=args.device, progress=not args.no_progress)
    print(json.dumps(result) if args.json else format_table(result))


def _interval(text: str | None) -> list[float] | None:
    """``--teacher-interval``: None (the run's), [] for 'none', else [lo, hi]."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise UserError(f"--teacher-interval {text!r}: expected LO,HI angles in radians (e.g. 0,0.5) or none")
    return values


def cmd_eval_realscale(args) -> None:
    import json

    for flag, value in (("--inception", args.inception), ("--clip", args.clip)):
        if value is None:
            raise UserError(f"--reference needs {flag}: pass {flag} {'FILE' if flag == '--inception' else 'DIR'} "
                            "(local files, nothing is downloaded)")
    if args.teacher:
        raise UserError("--teacher is not measured with --reference: drop --teacher")
    for flag, value in (("--teacher-cfg", args.teacher_cfg), ("--student-cfg", args.student_cfg),
                        ("--teacher-interval", args.teacher_interval)):
        if value:
            raise UserError(f"{flag} sweeps belong to the digits evaluation, not --reference: drop {flag}")
    for flag, value in (("--teacher-copied", args.teacher_copied), ("--teacher-best", args.teacher_best),
                        ("--split", args.split), ("--draw", args.draw), ("--prompts", args.prompts)):
        if value:
            raise UserError(f"{flag} belongs to the digits and scenes evaluation, not --reference: drop {flag} "
                            "(--fidelity works with --reference)")
    from .evaluation.realscale import evaluate_realscale, format_realscale_table

    result = evaluate_realscale(args.dir, args.reference, args.inception, args.clip, _counts("--steps", args.steps),
                                args.n, args.batch if args.batch is not None else 16, args.cfg,
                                args.seed if args.seed is not None else 0, shift=args.shift,
                                device=None if args.device == "auto" else args.device,
                                progress=not args.no_progress, fidelity=args.fidelity)
    print(json.dumps(result) if args.json else format_realscale_table(result))
