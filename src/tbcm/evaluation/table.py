"""The text table of a ``tbcm eval`` result (without ``--json``)."""

from __future__ import annotations

from .digits import _suite_named


def format_table(result: dict) -> str:
    """A small text table of :func:`evaluate`'s result."""
    if result.get("suite") == "fidelity":
        return "\n".join(_fidelity_lines(result) + [_fidelity_footer(result)])
    suite = _suite_named(result.get("suite", "digits"))
    lines = [f"{'model':<8} {'steps':>5} {'cfg':>5} {'FID':>9} {'adherence':>10}"]
    for model in ("student", "teacher"):
        for steps, s in result[model].items():
            lines.append(f"{model:<8} {steps:>5} {result['cfg_scale']:>5g} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
            lines += suite.extra_lines(model, steps, result["cfg_scale"], s)
    if "teacher_best" in result or "student_best" in result:
        lines.append("best guidance of each (the honest comparison):")
        tb = result.get("teacher_best")
        if tb:
            lines.append(f"{'teacher':<8} {tb['steps']:>5} {tb['cfg']:>5g} {tb['fid']:>9.4f} {tb['adherence']:>10.1%}")
            lines += suite.extra_lines("teacher", str(tb["steps"]), tb["cfg"], tb)
        for steps, b in result.get("student_best", {}).items():
            ratio = f"  {result['ratio'][steps]:.2f}x the teacher's best FID" if "ratio" in result else ""
            lines.append(f"{'student':<8} {steps:>5} {b['cfg']:>5g} {b['fid']:>9.4f} {b['adherence']:>10.1%}{ratio}")
            lines += suite.extra_lines("student", steps, b["cfg"], b)
    if result.get("teacher_interval") and result.get("teacher"):
        lo, hi = result["teacher_interval"]
        lines.append(f"teacher rows guided only at angles in ({lo:g}, {hi:g}] rad (the conditional teacher elsewhere)")
    copied, best = result.get("teacher_as_copied"), result.get("teacher_at_best")
    if copied or best:
        lines.append("the teacher the student copies, and the teacher at its best:")
    if copied:
        where = _interval_words(copied["guidance_interval"])
        lines.append(f"{'copied':<8} {copied['steps']:>5} {copied['cfg']:>5g} {copied['fid']:>9.4f} "
                     f"{copied['adherence']:>10.1%}  route shift {copied['shift']:g}, guided {where}")
        lines += suite.extra_lines("teacher", str(copied["steps"]), copied["cfg"], copied)
        for w, s in copied["sweep"].items():
            if float(w) != copied["cfg"]:
                lines.append(f"{'copied':<8} {copied['steps']:>5} {float(w):>5g} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
    if best:
        note = "  (chosen on these same images!)" if best["selected_on_reported_images"] else ""
        lines.append(f"{'best':<8} {best['steps']:>5} {best['cfg']:>5g} {best['fid']:>9.4f} {best['adherence']:>10.1%}"
                     f"  route shift {best['shift']:g}, guided {_interval_words(best['guidance_interval'])}; "
                     f"chosen on tune draw {best['tune']['draw']} (FID {best['tune']['fid']:.4f}) of "
                     f"{len(best['tried'])} settings{note}")
        lines += suite.extra_lines("teacher", str(best["steps"]), best["cfg"], best)
    for steps, s in result["student"].items():
        parts = []
        if "ratio_vs_best" in result:
            parts.append(f"{result['ratio_vs_best'][steps]:.2f}x the teacher at its best (headline)")
        if "ratio_vs_copied" in result:
            parts.append(f"{result['ratio_vs_copied'][steps]:.2f}x the teacher as copied")
        if parts:
            lines.append(f"student {steps} step(s), FID {s['fid']:.4f}: " + ", ".join(parts))
    if "fidelity" in result:
        lines += _fidelity_lines(result)
    floor = result.get("data_floor")
    if floor:
        lines.append(f"data floor: FID {floor['fid']:.4f} of {floor['images']} real training images "
                     f"({floor['per_prompt']} per prompt) against the same reference")
        lines += [f"  {which:<8} FID {floor[which]['fid']:7.2f}" for which in ("seen", "heldout") if which in floor]
    lines.append(suite.footer(result) + _draw_words(result))
    return "\n".join(lines)


def _interval_words(interval) -> str:
    return f"in ({interval[0]:g}, {interval[1]:g}] rad" if interval else "everywhere"


def _draw_words(result: dict) -> str:
    if result.get("split"):
        return f" ({result['split']} draw {result['draw']})"
    where = result.get("draw_of_seed")
    return f" ({where['split']} draw {where['draw']})" if where else ""


def _fidelity_lines(result: dict) -> list[str]:
    fid = result["fidelity"]
    t = fid["teacher"]
    lines = [f"fidelity to the teacher as copied ({t['steps']} steps, shift {t['shift']:g}, w {fid['cfg_scale']:g}, "
             f"guided {_interval_words(t['guidance_interval'])}; same noise, {fid['images']} images):"]
    for steps, e in fid["steps"].items():
        line = (f"  student {steps} step(s): latent MSE/sigma_d^2 {e['latent_mse']:.4g} "
                f"(independent teacher samples: {e['latent_mse_unpaired']:.4g})")
        if "feature_distance" in e:
            line += (f", feature distance {e['feature_distance']:.4g} ({e['feature_distance_unpaired']:.4g}), "
                     f"labels agree {e['label_agreement']:.1%}")
        if e.get("fid_to_teacher") is not None:
            line += f", FID to the teacher's samples {e['fid_to_teacher']:.4f}"
        lines.append(line)
    if fid.get("note"):
        lines.append(f"  {fid['note']}")
    return lines


def _fidelity_footer(result: dict) -> str:
    p = result["prompts"]
    return (f"{result['n_per_class']} image(s) per prompt for {p['count']} prompts ({p['source']}), "
            f"cfg {result['cfg_scale']}, image seeds from {result['seed']}, one per image{_draw_words(result)}")
