"""Peak memory of teacher + student at Sana-0.6B shapes: a LoRA student against a full one.

Each case runs in its own fresh process (nothing of one case's allocations is left for the next)
and builds, with random weights (nothing is downloaded):

* the teacher: diffusers ``SanaTransformer2DModel`` with the Sana-0.6B config
  (:data:`benchmarks.sana_real_shape.SANA_600M`: hidden 1152, caption 2304, MLP ratio 2.5, patch 1)
  at ``--depth`` of its 28 blocks, frozen, in ``SanaVelocityNet(t, 1000)`` inside
  :class:`tbcm.models.teacher.Teacher` (guided: cond and null in one batched call);
* the student as the trainer builds it: :func:`tbcm.models.lora.student_network` with
  ``student.lora_rank`` (0: the teacher's network copied and trained whole; r > 0: the teacher's own
  tensors, frozen, under rank-r adapters on the family's default targets, the guidance embedder and
  refitted time MLP trained in full), in :class:`tbcm.models.student.Student` (with its logvar head);
* AdamW over :func:`tbcm.models.lora.trainable` only and an :class:`tbcm.ema.EMA` of the trainable
  parameters (as ``tbcm.train.trainer`` does);

then takes ONE training step: ``--pairs`` random forward-noised pairs at ``--px`` (one guided teacher
call each, :class:`tbcm.pairs.forward.ForwardNoisePairSource`, random ``[B, 300, 2304]`` text
conditions), the sCM loss (:func:`tbcm.objectives.scm.scm_loss`, autograd JVP), backward, grad clip 1,
the optimiser step (its state is made here) and the EMA update.

Reported per case: parameter counts (teacher; student total and trainable), the storage teacher and
student hold together (:func:`tbcm.models.lora.held_bytes`: a LoRA base is counted once), the
optimiser state and EMA bytes, the process's RSS after the imports (before building), after building,
and its peak (``VmHWM``, reset after the imports) over the build and the step; the rise is the peak
less the RSS before building. Ratios are LoRA / full from the one run.

    python benchmarks/lora_memory.py                       # depth 2, 512 px, full / lora32 / lora8
    python benchmarks/lora_memory.py --write-results       # + a record in benchmarks/results/lora_memory.jsonl
    python benchmarks/lora_memory.py --smoke               # depth 1, 256 px (seconds; add --width for less)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks.*` from the repository root
    sys.path.insert(0, str(ROOT))

STORE_TABLE = "lora_memory"
KEY = "sana_0.6b_lora_memory"
HEADING = "## LoRA against a full student: memory of teacher + student at Sana-0.6B shapes (CPU)"
COMMAND = "python benchmarks/lora_memory.py --depth 2 --write-results"
SIGMA_D = 0.5
CFG_SCALES = [4.5]
RANKS = {"full": 0, "lora32": 32, "lora8": 8}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def sana_config(depth: int, px: int, width: int | None) -> dict:
    """Sana-0.6B's config at ``depth`` blocks for ``px`` images; ``width`` (a multiple of 32): a
    narrower model (heads of 32 for both attentions) for tests."""
    from benchmarks.sana_real_shape import SANA_600M, VAE_FACTOR

    config = {**SANA_600M, "num_layers": depth, "sample_size": px // VAE_FACTOR}
    if width:
        config.update(num_attention_heads=width // 32, attention_head_dim=32, num_cross_attention_heads=width // 32,
                      cross_attention_head_dim=32, cross_attention_dim=width)
    return config


# -- the worker: one case in a fresh process ---------------------------------------------------

def worker(case: dict) -> dict:
    import diffusers
    import torch
    from diffusers import SanaTransformer2DModel

    from benchmarks.sana_real_shape import NullEncoder, random_conds
    from tbcm.ema import EMA
    from tbcm.models import lora
    from tbcm.models.condition import TextCondition
    from tbcm.models.families.sana.network import SanaVelocityNet
    from tbcm.models.student import Student
    from tbcm.models.teacher import Teacher
    from tbcm.objectives.scm import SCMConfig, scm_loss
    from tbcm.pairs.forward import ForwardConfig, ForwardNoisePairSource

    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rss_before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS
    t0 = time.perf_counter()

    transformer = SanaTransformer2DModel(**sana_config(case["depth"], case["px"], case["width"]))
    transformer.eval().requires_grad_(False)
    teacher_net = SanaVelocityNet(transformer, 1000.0)
    null = random_conds(1, "cpu", gen)
    null = TextCondition(null.embeds, torch.zeros_like(null.mask))
    null.mask[:, :8] = 1  # the empty prompt: a few special tokens
    teacher = Teacher(teacher_net, NullEncoder(null), SIGMA_D, timestep_scale=1.0)
    student_net = lora.student_network(teacher_net, lora.StudentConfig(lora_rank=case["rank"]))
    student = Student(student_net, SIGMA_D, 1.0).train()
    params = lora.trainable(student)
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(student, 0.99)
    build_s = time.perf_counter() - t0
    rss_built = _status_mb("VmRSS")

    t1 = time.perf_counter()
    latent = (32, case["px"] // 32, case["px"] // 32)
    n = case["pairs"]
    x0 = SIGMA_D * torch.randn(n, *latent, generator=gen)
    source = ForwardNoisePairSource(teacher, x0, random_conds(n, "cpu", gen), CFG_SCALES, 1, ForwardConfig(),
                                    torch.Generator().manual_seed(1))
    pairs = source.next_pairs(n)
    loss, _ = scm_loss(student, pairs, SIGMA_D, 1.0, SCMConfig())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    ema.update(student)
    step_s = time.perf_counter() - t1
    peak = _status_mb("VmHWM")

    held_params, held = lora.held_bytes(teacher_net, student)
    opt_bytes = sum(t.untyped_storage().nbytes() for s in optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t) and t.dim() > 0)
    spec = lora.lora_spec(student_net)
    return {"params_teacher": sum(p.numel() for p in transformer.parameters()),
            "params_student": sum(p.numel() for p in student.parameters()),
            "params_trainable": sum(p.numel() for p in params),
            "params_held": held_params, "held_mb": held / 2**20,
            "optimizer_state_mb": opt_bytes / 2**20,
            "ema_mb": sum(t.untyped_storage().nbytes() for t in ema.shadow.values()) / 2**20,
            "adapted_layers": len(spec.modules) if spec else 0, "trained_in_full": len(spec.full) if spec else None,
            "rss_before_build_mb": rss_before, "rss_after_build_mb": rss_built, "peak_rss_mb": peak,
            "peak_rise_mb": peak - rss_before, "build_s": build_s, "step_s": step_s,
            "loss": float(loss.detach()), "threads": torch.get_num_threads()}


def run_case(case: dict) -> dict:
    """``case`` in a fresh Python process (its last stdout line: ``@@`` + the result)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(case["threads"])}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"status {proc.returncode}"]
        return {"case": case, "error": tail[0][:300]}
    return {"case": case, **json.loads(lines[-1][2:])}


# -- the driver and the table ------------------------------------------------------------------

def measure(spec: dict, command: str) -> dict:
    import diffusers
    import torch

    t0 = time.perf_counter()
    cases = {}
    for name in spec["cases"]:
        case = {k: spec[k] for k in ("depth", "px", "width", "pairs", "threads")} | {"name": name, "rank": RANKS[name]}
        print(f"measuring {name} (fresh process) ...", flush=True)
        cases[name] = run_case(case)
        if "error" in cases[name]:
            print(f"  {name} failed: {cases[name]['error']}", flush=True)
    return {"command": command, "date": str(datetime.date.today()), "settings": spec, "cases": cases,
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {spec['threads']} torch thread(s), "
                       f"torch {torch.__version__}",
            "diffusers": diffusers.__version__, "wall_s": time.perf_counter() - t0}


def _mb(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


COLUMNS = [("params_teacher", "teacher params (M)", lambda v: f"{v / 1e6:.1f}"),
           ("params_trainable", "student trainable params (M)", lambda v: f"{v / 1e6:.2f}"),
           ("held_mb", "teacher + student weights held (MB)", _mb),
           ("optimizer_state_mb", "AdamW state (MB)", _mb), ("ema_mb", "EMA (MB)", _mb),
           ("rss_before_build_mb", "RSS before building (MB)", _mb),
           ("peak_rss_mb", "peak RSS (MB)", _mb), ("peak_rise_mb", "peak rise (MB)", _mb)]
RATIOS = ["params_trainable", "held_mb", "optimizer_state_mb", "ema_mb", "peak_rss_mb", "peak_rise_mb"]


def table(res: dict) -> list[str]:
    cases = res["cases"]
    lines = ["| case | " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, c in cases.items():
        if "error" in c:
            lines.append(f"| {name} | failed: {c['error']} |" + " |" * (len(COLUMNS) - 1))
            continue
        lines.append(f"| {name} | " + " | ".join(fmt(c[k]) for k, _, fmt in COLUMNS) + " |")
    full = cases.get("full")
    for name, c in cases.items():
        if name == "full" or full is None or "error" in full or "error" in c:
            continue
        cells = [f"{c[k] / full[k]:.3f}" if k in RATIOS and full[k] else "" for k, _, _ in COLUMNS]
        lines.append(f"| {name} / full | " + " | ".join(cells) + " |")
    return lines


def notes(res: dict) -> str:
    s = res["settings"]
    width = f", width {s['width']} (not Sana's 1152)" if s["width"] else ""
    any_lora = next((c for n, c in res["cases"].items() if n != "full" and "error" not in c), None)
    text = (f"Settings: Sana-0.6B config at depth {s['depth']} of 28 blocks{width}, fp32 on CPU, {s['px']} px "
            f"(latent 32 x {s['px'] // 32} x {s['px'] // 32}), one training step on {s['pairs']} forward-noised "
            f"pairs (one guided teacher call each), sCM loss with the autograd JVP, AdamW over the trainable "
            f"parameters only, EMA of the same; each case in a fresh process, {s['threads']} thread(s). "
            "Weights held: every parameter storage of teacher and student counted once (a LoRA student's base "
            "is the teacher's own tensors). Peak RSS: VmHWM over building and the step, reset after the imports; "
            "rise: peak less the RSS before building.")
    if any_lora is not None:
        text += (f" LoRA: the family's default targets ({any_lora['adapted_layers']} layers adapted); "
                 f"{any_lora['trained_in_full']} parameters trained in full (guidance embedder, refitted time "
                 "MLP) plus the logvar head.")
    return text


def section(res: dict) -> list[str]:
    return [f"Command: `{res['command']}`. Machine: {res['machine']}, diffusers {res['diffusers']}. "
            f"Date: {res['date']}. Wall time {res['wall_s']:.0f} s.", "", *table(res), "", notes(res)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=None, help="transformer blocks of Sana-0.6B's 28 (default 2)")
    ap.add_argument("--px", type=int, default=None, help="image size, a multiple of 32 (default 512)")
    ap.add_argument("--width", type=int, default=0, help="hidden width, a multiple of 32 (default 0: Sana's 1152)")
    ap.add_argument("--pairs", type=int, default=2, help="pairs in the training step")
    ap.add_argument("--cases", default="full,lora32,lora8", help=f"comma-separated, of {', '.join(RANKS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per case")
    ap.add_argument("--smoke", action="store_true", help="depth 1, 256 px")
    ap.add_argument("--write-results", action="store_true", help="append a record to the results store")
    ap.add_argument("--store", default=None, help="the results store folder (default benchmarks/results/)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        out = worker(json.loads(args.worker))
        sys.stdout.write("@@" + json.dumps(out) + "\n")
        return 0
    cases = [c for c in args.cases.split(",") if c]
    if not cases or any(c not in RANKS for c in cases):
        ap.error(f"--cases: a comma-separated list of {', '.join(RANKS)}")
    spec = {"depth": args.depth or (1 if args.smoke else 2), "px": args.px or (256 if args.smoke else 512),
            "width": args.width, "pairs": args.pairs, "threads": args.threads, "cases": cases, "smoke": args.smoke}
    if not 1 <= spec["depth"] <= 28 or spec["px"] % 32 or spec["width"] % 32:
        ap.error("--depth 1..28, --px and --width multiples of 32")
    argv_used = ["python", "benchmarks/lora_memory.py", *(argv if argv is not None else sys.argv[1:])]
    command = " ".join(argv_used)
    res = measure(spec, command)
    print()
    print("\n".join(section(res)))
    if args.write_results:
        from benchmarks.harness.store import Store, manifest

        store = Store(args.store) if args.store else Store()
        store.append(STORE_TABLE, {"key": KEY + ("_smoke" if args.smoke else ""), "smoke": args.smoke,
                                   "manifest": manifest(argv_used), **res})
        print(f"recorded in {store.path(STORE_TABLE)}")
    return 1 if any("error" in c for c in res["cases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
