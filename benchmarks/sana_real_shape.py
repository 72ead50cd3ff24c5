"""Per-pair step time and peak memory at Sana-0.6B shapes: TBCM's trajectory step against the
data-driven sCM step, side by side with the paper's ratios (TBCM / sCM: 0.58 time, 0.36 memory).

Timing and memory need no trained weights: every model is built from its public config with
random weights (nothing is downloaded), the text conditions are random ``[B, 300, 2304]`` tensors
with a mask (the cached Gemma-2 encodings both sources read; Gemma is not loaded by either).

* Transformer: diffusers ``SanaTransformer2DModel`` with the Sana-0.6B 512 px config (hidden 1152,
  36 x 32 linear-attention heads, 16 x 72 cross-attention heads, caption 2304, MLP ratio 2.5,
  latent 32 x 16 x 16, patch 1), ``--depth`` of its 28 blocks.  Teacher: ``SanaVelocityNet(t, 1000)``
  in :class:`tbcm.models.teacher.Teacher` (guided, cond + null in one batch).  Student:
  ``Student(SanaVelocityNet(student_transformer(teacher, 1000, refit_steps=10), 1), 0.5, 1)``: the
  project's construction, the time-MLP refit shortened to 10 Adam steps (setup, not timed).
* Autoencoder: diffusers ``AutoencoderDC`` with the ``dc-ae-f32c32-sana-1.0`` config (encoder and
  decoder, as a loaded VAE is), built only in the sCM measurement.

Step kinds, same student, objective (:func:`tbcm.objectives.scm.scm_loss`, autograd JVP), optimiser
(AdamW, grad clip 1, EMA: :meth:`tbcm.distill.Distiller.train_step`) and pairs per step:

* ``tbcm``: :class:`~tbcm.pairs.trajectory.TrajectoryPairSource` rolls the teacher out over a route
  of K points for P prompts (P * (K - 1) pairs; K guided calls per prompt), then the sCM step;
* ``scm``: random images ``[B, 3, 512, 512]`` through the DC-AE encoder (no grad), then
  :class:`~tbcm.pairs.forward.ForwardNoisePairSource` (logit-normal t, forward noise, ONE guided
  teacher call per pair for the tangent), then the same sCM step.  The images are made before the
  clock starts: data loading and decoding are not counted (in sCM's favour).

Each kind runs in a fresh process: ``--warmup`` steps, then ``--steps`` timed steps.  Peak memory
is the CUDA allocator peak since the end of setup (weights included) on a GPU, and on a CPU the
process's peak resident set since the end of setup (``VmHWM`` reset through
``/proc/self/clear_refs``), also shown above the RSS right after the imports.

    python benchmarks/sana_real_shape.py                            # CPU, depth 2, ~3 minutes on 2 quiet cores
    python benchmarks/sana_real_shape.py --full --json gpu.json     # GPU: depth 28, bf16, CUDA
    python benchmarks/sana_real_shape.py --no-measure --gpu-json gpu.json --write-results  # merge later

Prints a markdown table; ``--json`` writes the result, ``--write-results`` replaces the marked block
of docs/results.md (the other device's slot comes from ``--cpu-json`` / ``--gpu-json`` or, failing
that, is kept from the current block; with neither it reads "not measured").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_doc import write_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
HEADING = "## Sana-0.6B shapes: TBCM step vs data-driven sCM step (time and memory per pair)"
PAPER = {"time": 0.58, "memory": 0.36}  # TBCM / sCM: "about 42% less time and 64% less memory"

# diffusers scripts/convert_sana_to_diffusers.py: SanaMS_600M_P1_D28 at 512 px.
SANA_600M_512 = dict(in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
                     num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
                     caption_channels=2304, mlp_ratio=2.5, attention_bias=False, sample_size=16, patch_size=1,
                     norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None)
# diffusers scripts/convert_dcae_to_diffusers.py: dc-ae-f32c32-sana-1.0.
DC_AE_F32C32_SANA = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    downsample_block_type="conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", scaling_factor=0.41407)
IMAGE_SIZE = 512
TEXT_LEN, TEXT_DIM = 300, 2304
SIGMA_D = 0.5
CFG_SCALES = [4.5]
KINDS = {"tbcm": "TBCM: trajectory rollout + sCM step (no VAE)",
         "scm": "sCM: DC-AE encode + forward noise + 1 guided call + sCM step"}


# -- memory ----------------------------------------------------------------------------------

def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device) -> str:
    """Start a fresh peak: the CUDA allocator's, or the process's resident-set high-water mark."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return "torch.cuda.max_memory_allocated since the end of setup"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return "peak RSS (VmHWM) since the end of setup"
    except OSError:
        return "peak RSS of the whole process (ru_maxrss; VmHWM could not be reset)"


def peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _status_kb("VmHWM")
    return hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


# -- the worker: one kind in its own process -------------------------------------------------

class NullEncoder:
    """The teacher's prompt encoder as far as :class:`Teacher` needs it: the null condition."""

    def __init__(self, cond):
        self.cond = cond

    def encode(self, prompts):
        assert list(prompts) == [""], prompts
        return self.cond


def random_conds(n: int, device, generator):
    """``n`` text conditions like cached Gemma-2 outputs: ``[n, 300, 2304]``, real tokens first."""
    import torch

    from tbcm.models.condition import TextCondition

    embeds = torch.randn(n, TEXT_LEN, TEXT_DIM, generator=generator)
    lengths = torch.randint(20, TEXT_LEN + 1, (n,), generator=generator)
    mask = (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long()
    return TextCondition(embeds.to(device), mask.to(device))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_kind(kind: str, spec: dict) -> dict:
    """Build, warm up and time one step kind; returns per-step timings and the peak memory."""
    import diffusers
    import torch
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    from tbcm.ema import EMA
    from tbcm.models.families.sana.network import SanaVelocityNet, student_transformer
    from tbcm.models.student import Student
    from tbcm.models.teacher import Teacher
    from tbcm.models.condition import TextCondition
    from tbcm.objectives.scm import SCMConfig, scm_loss
    from tbcm.pairs.base import Pairs
    from tbcm.pairs.forward import ForwardConfig, ForwardNoisePairSource
    from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

    diffusers.utils.logging.set_verbosity_error()  # not the "cast with to()" notes of the bf16 casts
    import_rss = (_status_kb("VmRSS") or 0.0) / 1024
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    bf16 = spec["dtype"] == "bf16"
    low = torch.bfloat16 if bf16 else torch.float32
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    t_setup = time.perf_counter()
    with torch.device(device):  # initialise on the device: a CPU init of two 0.6B models takes a minute
        transformer = SanaTransformer2DModel(**{**SANA_600M_512, "num_layers": spec["depth"]}).eval()
        student_net = SanaVelocityNet(student_transformer(transformer, 1000.0, refit_steps=10), 1.0).float()
    student = Student(student_net, SIGMA_D, 1.0).to(device).train()
    transformer.to(device=device, dtype=low).requires_grad_(False)
    null = random_conds(1, "cpu", gen)
    null = TextCondition(null.embeds, torch.zeros_like(null.mask))
    null.mask[:, :8] = 1  # the empty prompt: a few special tokens
    teacher = Teacher(SanaVelocityNet(transformer, 1000.0), NullEncoder(null), SIGMA_D, timestep_scale=1.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(student, 0.99)
    scm_cfg = SCMConfig()  # autograd JVP, tangent normalisation c = 0.1
    k, pairs_n = spec["route_points"], spec["pairs"]
    prompts = pairs_n // (k - 1)
    info = {"params_teacher": count(transformer), "params_student": count(student)}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)

    if kind == "tbcm":
        conds = random_conds(prompts, device, gen)
        source = TrajectoryPairSource(teacher, conds, CFG_SCALES, (32, 16, 16),
                                      TrajectoryConfig(route_points=k), blank_value=0.0,
                                      generator=torch.Generator().manual_seed(1))
        vae = None
    else:
        with torch.device(device):
            vae = AutoencoderDC(**DC_AE_F32C32_SANA).eval().requires_grad_(False).to(device=device, dtype=low)
        info["params_vae"], info["params_vae_encoder"] = count(vae), count(vae.encoder)
        conds = random_conds(pairs_n, device, gen)
        fwd_gen = torch.Generator().manual_seed(1)
    info["setup_s"] = time.perf_counter() - t_setup

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def student_step(pairs: Pairs) -> None:
        loss, _ = scm_loss(student, pairs, SIGMA_D, 1.0, scm_cfg, bf16=bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        ema.update(student)

    def to_device(p: Pairs) -> Pairs:
        return Pairs(p.x_t.to(device), p.t.to(device), p.u.to(device), p.cond.to(device), p.w.to(device),
                     p.mask.to(device), p.prompt_ids)

    def step() -> dict:
        """One training step; returns its phases in seconds."""
        phases = {}
        if kind == "tbcm":
            sync()
            t0 = time.perf_counter()
            pairs = to_device(source.next_pairs(prompts))
            sync()
            t1 = time.perf_counter()
            phases["encoder"], phases["teacher"] = 0.0, t1 - t0
        else:
            images = torch.rand(pairs_n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=fwd_gen).to(device, low) * 2 - 1
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                latents = vae.encode(images, return_dict=False)[0]
            x0 = SIGMA_D * vae.config.scaling_factor * latents.float()  # TrigFlow state of the clean latent
            sync()
            t1 = time.perf_counter()
            forward = ForwardNoisePairSource(teacher, x0, conds, CFG_SCALES, 1, ForwardConfig(), fwd_gen)
            pairs = forward.next_pairs(pairs_n)
            sync()
            phases["encoder"], phases["teacher"] = t1 - t0, time.perf_counter() - t1
            t1 = time.perf_counter()
        assert len(pairs) == pairs_n, (len(pairs), pairs_n)
        student_step(pairs)
        sync()
        phases["student"] = time.perf_counter() - t1
        phases["total"] = time.perf_counter() - t0
        return phases

    memory_kind = reset_peak(device)
    setup_peak = peak_mb(device)
    for _ in range(spec["warmup"]):
        step()
    cpu0 = cpu_seconds()
    steps = [step() for _ in range(spec["steps"])]
    cpu_s = cpu_seconds() - cpu0
    peak = peak_mb(device)
    mean = {key: sum(s[key] for s in steps) / len(steps) for key in steps[0]}
    return {"kind": kind, **info, "prompts_per_step": prompts, "pairs_per_step": pairs_n,
            "guided_teacher_calls_per_step": prompts * k if kind == "tbcm" else pairs_n,
            "step_s": [s["total"] for s in steps], "mean_s": mean,
            "ms_per_pair": {key: 1000 * v / pairs_n for key, v in mean.items()},
            "peak_mb": peak, "resident_after_setup_mb": setup_peak, "import_rss_mb": import_rss,
            "memory": memory_kind, "threads": torch.get_num_threads(), "cpu_ms_per_pair": 1000 * cpu_s / (
                len(steps) * pairs_n),
            # CPU time over wall time x threads while timing: well under 1 = other processes took the cores
            "cpu_share": cpu_s / (sum(s["total"] for s in steps) * torch.get_num_threads())}


# -- the driver ------------------------------------------------------------------------------

def machine(spec: dict, kinds: dict) -> str:
    import torch  # the driver never touches CUDA: the workers' device name is reported

    if spec["device"] == "cuda":
        names = sorted({k["device_name"] for k in kinds.values() if "device_name" in k}) or ["GPU (no kind ran)"]
        return f"{', '.join(names)}, CUDA {torch.version.cuda}, torch {torch.__version__}, {os.cpu_count()} CPU cores"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {spec['threads'] or torch.get_num_threads()} "
            f"torch threads, torch {torch.__version__}")


def measure(spec: dict, command: str, json_path: Path | None = None) -> dict:
    """Each kind in a fresh process; with ``json_path`` the result so far is written after each kind."""
    import diffusers

    result = {"command": command, "date": str(datetime.date.today()), "device": spec["device"],
              "diffusers": diffusers.__version__, "settings": spec, "kinds": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tbcm-sana-shape-") as tmp:
        for kind in KINDS:
            print(f"measuring {kind} in a fresh process ...", flush=True)
            out, spec_file = Path(tmp) / f"{kind}.json", Path(tmp) / "spec.json"
            spec_file.write_text(json.dumps(spec))
            env = dict(os.environ)
            if spec["threads"]:
                env["OMP_NUM_THREADS"] = str(spec["threads"])
            rc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--worker-spec",
                                 str(spec_file), "--worker-out", str(out)], check=False, env=env).returncode
            if out.is_file():
                result["kinds"][kind] = json.loads(out.read_text())
            else:
                result["kinds"][kind] = {"kind": kind, "error": f"the worker exited with status {rc} and no result"}
            result["wall_s"] = time.perf_counter() - t0
            result["machine"] = machine(spec, result["kinds"])
            if json_path is not None:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(result, indent=1))
    return result


def ratios(res: dict) -> dict | None:
    """TBCM / sCM per pair (time, peak memory; on a CPU also CPU time); None when a kind failed."""
    a, b = (res["kinds"].get(kind, {"error": "not run"}) for kind in KINDS)
    if "error" in a or "error" in b:
        return None
    out = {"time": a["ms_per_pair"]["total"] / b["ms_per_pair"]["total"], "memory": a["peak_mb"] / b["peak_mb"]}
    if res["device"] == "cpu":
        out["cpu_time"] = a["cpu_ms_per_pair"] / b["cpu_ms_per_pair"]
        out["memory_above_imports"] = (a["peak_mb"] - a["import_rss_mb"]) / (b["peak_mb"] - b["import_rss_mb"])
    return out


def table(res: dict) -> list[str]:
    s, r = res["settings"], ratios(res)
    cpu = res["device"] == "cpu"
    cols = ["step kind", "ms / pair", "encoder ms / pair", "teacher ms / pair", "student step ms / pair"]
    cols += ["CPU ms / pair", "CPU share"] if cpu else []
    cols += ["peak MB"] + (["peak MB above the imports"] if cpu else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for kind, label in KINDS.items():
        k = res["kinds"].get(kind, {"error": "not run"})
        if "error" in k:
            lines.append(f"| {label} | failed: {k['error']} |" + " |" * (len(cols) - 2))
            continue
        ms = k["ms_per_pair"]
        cells = [label, *(f"{ms[p]:.0f}" for p in ("total", "encoder", "teacher", "student"))]
        cells += [f"{k['cpu_ms_per_pair']:.0f}", f"{k['cpu_share']:.0%}"] if cpu else []
        cells += [f"{k['peak_mb']:.0f}"] + ([f"{k['peak_mb'] - k['import_rss_mb']:.0f}"] if cpu else [])
        lines.append("| " + " | ".join(cells) + " |")
    if r is not None:
        cells = ["**ratio TBCM / sCM (ours)**", f"**{r['time']:.2f}**", "", "", ""]
        cells += [f"**{r['cpu_time']:.2f}**", ""] if cpu else []
        cells += [f"**{r['memory']:.2f}**"] + ([f"**{r['memory_above_imports']:.2f}**"] if cpu else [])
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["ratio TBCM / sCM (paper)", f"{PAPER['time']:.2f}", "", "", ""] + (["", ""] if cpu else [])
    cells += [f"{PAPER['memory']:.2f}"] + ([""] if cpu else [])
    lines.append("| " + " | ".join(cells) + " |")
    k_t, k_s = (res["kinds"].get(kind, {"error": "not run"}) for kind in KINDS)
    k = s["route_points"]
    notes = (f"Settings: depth {s['depth']} of 28 blocks, {s['dtype']}, {s['pairs']} pairs per step (TBCM: "
             f"{s['pairs'] // (k - 1)} prompt(s) x {k - 1} points of a K={k} route, {k} guided teacher calls per "
             f"prompt; sCM: {s['pairs']} images, 1 guided teacher call each), {s['warmup']} warm-up + "
             f"{s['steps']} timed steps per kind, mean per pair."
             + (" CPU ms: user + system time of the process, all threads; CPU share: that over wall time x "
                "threads (well under 100% = other processes held the cores, and wall times are inflated)."
                if cpu else ""))
    if "error" not in k_t:
        notes += (f" Parameters: teacher {k_t['params_teacher'] / 1e6:.1f} M, student "
                  f"{k_t['params_student'] / 1e6:.1f} M")
        if "error" not in k_s:
            notes += (f", DC-AE {k_s['params_vae'] / 1e6:.1f} M (encoder {k_s['params_vae_encoder'] / 1e6:.1f} M)")
        notes += f". Memory: {k_t['memory']}"
        if cpu and "error" not in k_s:
            notes += (f"; RSS right after the imports {k_t['import_rss_mb']:.0f} MB (TBCM) / "
                      f"{k_s['import_rss_mb']:.0f} MB (sCM)")
        notes += "."
    return lines + ["", notes]


def title(res: dict) -> str:
    s = res["settings"]
    depth = "full depth (28 blocks)" if s["depth"] == 28 else f"depth {s['depth']} of 28"
    return f"{'GPU' if res['device'] == 'cuda' else 'CPU'}, {depth}, {s['dtype']}"


def section(res: dict | None, missing: str) -> list[str]:
    if res is None:
        return [missing]
    head = (f"**{title(res)}**. Command: `{res['command']}`. Machine: {res['machine']}, diffusers "
            f"{res['diffusers']}. Date: {res['date']}. Benchmark wall time {res['wall_s']:.0f} s.")
    return [head, "", *table(res)]


INTRO = (
    "Time and memory of one training step per pair at Sana-0.6B shapes, without trained weights: diffusers "
    "`SanaTransformer2DModel` with the Sana-0.6B 512 px config (hidden 1152, 36 x 32 linear-attention heads, "
    "16 x 72 cross-attention heads, caption 2304, MLP ratio 2.5, latent 32 x 16 x 16) and `AutoencoderDC` with the "
    "`dc-ae-f32c32-sana-1.0` config, random weights; random `[B, 300, 2304]` text conditions with a mask stand in "
    "for the cached Gemma-2 encodings (neither step loads Gemma). TBCM: the teacher's guided rollout over K route "
    "points (`TrajectoryPairSource`; no autoencoder exists in that process), then the sCM step. sCM: random 512 px "
    "images through the DC-AE encoder, logit-normal t, forward noise and one guided teacher call per pair "
    "(`ForwardNoisePairSource`), then the same sCM step. The sCM step in both: autograd JVP, gradient forward "
    "(bf16 autocast under bf16; teacher and VAE then run in bf16), backward, grad clip, AdamW, EMA. Image loading "
    "is not counted (in sCM's favour). Each kind runs in its own process. Paper: TBCM takes about 42% less time "
    "and 64% less memory than sCM (ratios 0.58 and 0.36).")
READING = (
    "Reading: the encoder's cost per image does not depend on the transformer's depth and the transformer's does, "
    "so at reduced depth the encoder's share of the sCM step, and with it TBCM's saving, is larger than at "
    "Sana-0.6B's 28 blocks; memory at reduced depth is likewise dominated by the autoencoder (weights and 512 px "
    "activations), while at full depth the student's weights, gradients, AdamW and EMA state and activations, the "
    "same in both kinds, weigh more. Per pair TBCM spends K / (K - 1) guided teacher calls, sCM one plus one 512 px "
    "encode. Only full-depth rows compare with the paper's numbers.")
GPU_MISSING = (
    "**GPU, full depth (28 blocks), bf16**: not measured (no GPU result merged). Run "
    "`python benchmarks/sana_real_shape.py --full --json gpu.json` on a CUDA machine, then "
    "`python benchmarks/sana_real_shape.py --no-measure --gpu-json gpu.json --write-results` here.")


def render(slots: dict) -> str:
    lines = [INTRO, "", *section(slots.get("cpu"), "**CPU**: not measured."), "", *section(slots.get("gpu"), GPU_MISSING),
             "", READING]
    data = json.dumps({k: v for k, v in slots.items() if v is not None}, separators=(",", ":"))
    lines += ["", f"<!-- sana_real_shape:data {data.replace('>', chr(92) + 'u003e')} -->"]
    return "\n".join(lines)


def doc_slots() -> dict:
    if not DOC.is_file():
        return {}
    m = re.search(r"<!-- sana_real_shape:data (\{.*?\}) -->", DOC.read_text(), flags=re.DOTALL)
    return json.loads(m.group(1)) if m else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, help="transformer blocks (default 2; --full: 28)")
    ap.add_argument("--pairs", type=int, help="pairs per step, a multiple of K - 1 (default 4; --full: 30)")
    ap.add_argument("--route-points", type=int, help="K, TBCM route points per prompt (default 5; --full: 16)")
    ap.add_argument("--steps", type=int, help="timed steps per kind (default 2; --full: 10)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per kind first")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default cpu; --full: cuda")
    ap.add_argument("--dtype", choices=["fp32", "bf16"],
                    help="bf16: teacher and VAE in bf16, student gradient forward under bf16 autocast (the JVP "
                         "stays fp32, as precision=bf16 in training); default fp32, --full: bf16")
    ap.add_argument("--full", action="store_true", help="the GPU run: depth 28, bf16, cuda, K=16, 30 pairs, 10 steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--write-results", action="store_true", help="replace the marked block in docs/results.md")
    ap.add_argument("--cpu-json", type=Path, help="a CPU result (from --json) to show in the doc")
    ap.add_argument("--gpu-json", type=Path, help="a GPU result (from --json) to show in the doc")
    ap.add_argument("--no-measure", action="store_true", help="measure nothing; render the doc from the JSON files")
    ap.add_argument("--worker", choices=list(KINDS), help=argparse.SUPPRESS)
    ap.add_argument("--worker-spec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        spec = json.loads(args.worker_spec.read_text())
        try:
            result = run_kind(args.worker, spec)
        except Exception as exc:  # out of memory, no CUDA, ...: the other kind still runs
            args.worker_out.write_text(json.dumps({"kind": args.worker, "error": f"{type(exc).__name__}: {exc}"[:300]}))
            raise
        args.worker_out.write_text(json.dumps(result))
        return

    f = args.full
    spec = {"depth": args.depth or (28 if f else 2), "pairs": args.pairs or (30 if f else 4),
            "route_points": args.route_points or (16 if f else 5), "steps": args.steps or (10 if f else 2),
            "warmup": args.warmup, "device": args.device or ("cuda" if f else "cpu"),
            "dtype": args.dtype or ("bf16" if f else "fp32"), "threads": args.threads}
    if spec["route_points"] < 2 or spec["pairs"] % (spec["route_points"] - 1):
        ap.error(f"--pairs {spec['pairs']} must be a positive multiple of K - 1 = {spec['route_points'] - 1}")
    if not 1 <= spec["depth"] <= 28:
        ap.error("--depth must be 1..28 (Sana-0.6B has 28 blocks)")

    slots = doc_slots() if args.write_results else {}
    for key, path in (("cpu", args.cpu_json), ("gpu", args.gpu_json)):
        if path is not None:
            slots[key] = json.loads(path.read_text())
    if not args.no_measure:
        command = "python benchmarks/sana_real_shape.py" + "".join(f" {a}" for a in sys.argv[1:])
        res = measure(spec, command, args.json)
        slots["cpu" if res["device"] == "cpu" else "gpu"] = res
        print()
        print("\n".join(section(res, "")))
        r = ratios(res)
        if r is not None:
            cpu_time = f", CPU time {r['cpu_time']:.2f}" if "cpu_time" in r else ""
            print(f"\nTBCM / sCM per pair: time {r['time']:.2f}{cpu_time} (paper {PAPER['time']:.2f}), peak memory "
                  f"{r['memory']:.2f} (paper {PAPER['memory']:.2f})")
        shares = {kind: k["cpu_share"] for kind, k in res["kinds"].items() if "cpu_share" in k}
        if res["device"] == "cpu" and any(v < 0.8 for v in shares.values()):
            print(f"warning: other processes took CPU time ({', '.join(f'{k} {v:.0%}' for k, v in shares.items())} "
                  "of the cores): wall times are inflated; compare CPU ms, or rerun on a quiet machine")
    if args.write_results:
        write_block("sana_real_shape", render(slots), HEADING)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
