"""Per-pair step time and peak memory at Sana-0.6B shapes, side by side in one run: TBCM with a
trajectory pool, TBCM with each step's own rollout, and the data-driven sCM step, at 512 and
1024 px with equal pairs per step, plus the paper's own setting (1 prompt x 15 points per GPU
for TBCM against sCM with a batch of 16 latents at 1024 px). Paper: TBCM / sCM 0.58 time, 0.36 memory.

Timing and memory need no trained weights: every model is built from its public config with
random weights (nothing is downloaded), the text conditions are random ``[B, 300, 2304]`` tensors
with a mask (the cached Gemma-2 encodings all kinds read; Gemma is not loaded by any).

* Transformer: diffusers ``SanaTransformer2DModel`` with the Sana-0.6B config (hidden 1152,
  36 x 32 linear-attention heads, 16 x 72 cross-attention heads, caption 2304, MLP ratio 2.5,
  patch 1; latent 32 x 16 x 16 at 512 px, 32 x 32 x 32 at 1024 px), ``--depth`` of its 28 blocks.
  Teacher: ``SanaVelocityNet(t, 1000)`` in :class:`tbcm.models.teacher.Teacher` (guided: cond and
  null in one batched call), called through :func:`tbcm.pairs.rollout_teacher.rollout_teacher`
  with ``--rollout-dtype`` / ``--rollout-compile`` (the same for every kind). Its cross-attention
  runs diffusers' ``SanaAttnProcessor2_0`` (``F.scaled_dot_product_attention``: the fused kernels
  on CUDA); its self-attention is Sana's linear attention. Student:
  ``Student(SanaVelocityNet(student_transformer(teacher, 1000, refit_steps=10), 1), 0.5, 1)``.
* Autoencoder: diffusers ``AutoencoderDC`` with the ``dc-ae-f32c32-sana-1.0`` config (encoder and
  decoder, as a loaded VAE is), built only by the sCM kind.

Kinds, same student, objective (:func:`tbcm.objectives.scm.scm_loss`, autograd JVP), optimiser
(AdamW, grad clip 1, EMA) and pairs per step N:

* ``tbcm``: :class:`~tbcm.pairs.trajectory.TrajectoryPairSource` rolls the teacher out over a K-point
  route for P = N / (K - 1) prompts each step (K guided calls of batch 2P), then the sCM step;
* ``tbcm_pool``: the same source inside :class:`~tbcm.pairs.pool.TrajectoryPool`: Q = ``--pool-prompts``
  trajectories rolled out at once (K guided calls of batch 2Q every Q / P steps), each step's N pairs
  drawn from the pool; warm-up and timed steps are whole refill cycles, so the refill is amortised;
* ``scm``: random images through the DC-AE encoder (no grad), then
  :class:`~tbcm.pairs.forward.ForwardNoisePairSource` (logit-normal t, forward noise, ONE guided
  teacher call per pair), then the same sCM step. Images are made before the clock starts. With
  ``--encode-images M`` (CPU default 1: a 1024 px encode takes about a minute on one thread) only
  M images are encoded per step, their latents tiled to N, and the encoder column is the measured
  time per encoded image counted once per pair (every pair needs its own image); its memory is
  then that of an M-image encode.

Interleaving: on a CPU all cases of one image size are separate processes alive together, and the
driver has them take one step each in turn (``--sequential``: one process after the other, the
default on CUDA, where several full-depth processes would not fit on one device), so other load on
a shared machine falls on all kinds alike. Peak memory: the CUDA allocator peak since the end of
setup (weights included) on a GPU; on a CPU the process's peak resident set since the end of setup
(``VmHWM`` reset through ``/proc/self/clear_refs``), also shown above the RSS after the imports.

    python benchmarks/sana_real_shape.py                             # CPU, depth 1, 1 thread, ~15 min
    python benchmarks/sana_real_shape.py --full --json gpu.json      # GPU: depth 28, bf16 (gpu_side_by_side.sh)
    python benchmarks/sana_real_shape.py --no-measure --gpu-json gpu.json --write-results  # merge later

Prints markdown tables and the ratios; ``--json`` writes the result, ``--write-results`` records the
CPU and GPU slots in the results store (``benchmarks/results/sana_real_shape.jsonl``), which
``python benchmarks/report.py --write docs/results.md`` prints (the other device's slot comes from
``--cpu-json`` / ``--gpu-json`` or, failing that, is kept from the last record; with neither it reads
"not measured").
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
STORE_TABLE = "sana_real_shape"  # the results store's table (benchmarks/harness/store.py)
BLOCK = "sana_side_by_side"
HEADING = "## Sana-0.6B shapes side by side: TBCM with and without the pool vs sCM, 512 and 1024 px"
PAPER = {"time": 0.58, "memory": 0.36}  # TBCM / sCM: "about 42% less time and 64% less memory"
GPU_TARGETS = {"time": 0.75, "memory": 0.9}  # issue 14, full depth, bf16, 1024 px, equal pairs
CPU_TEACHER_TARGET = 1.2  # issue 14: TBCM teacher ms per pair within 1.2x of sCM's

# diffusers scripts/convert_sana_to_diffusers.py: SanaMS_600M_P1_D28 (sample_size = px / 32).
SANA_600M = dict(in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
                 num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
                 caption_channels=2304, mlp_ratio=2.5, attention_bias=False, sample_size=16, patch_size=1,
                 norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None)
SANA_600M_512 = SANA_600M  # the name other benchmarks import
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
VAE_FACTOR = 32  # DC-AE f32: latent side = image side / 32
TEXT_LEN, TEXT_DIM = 300, 2304
SIGMA_D = 0.5
CFG_SCALES = [4.5]
KINDS = {"tbcm_pool": "TBCM, trajectory pool", "tbcm": "TBCM, each step's own rollout",
         "scm": "sCM: DC-AE encode + forward noise + 1 guided call"}
PAPER_SCM_BATCH = 16  # the paper's sCM baseline: batch 16 of 1024 px latents per GPU

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


# -- the worker: one case in its own process ------------------------------------------------

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


class Case:
    """One step kind at one image size, built in this process: ``step()`` runs one training step
    and returns its phases in seconds (``encoder``: per step as measured; ``encoder_per_image``)."""

    def __init__(self, case: dict):
        import diffusers
        import torch
        from diffusers import AutoencoderDC, SanaTransformer2DModel

        from tbcm.ema import EMA
        from tbcm.models.families.sana.network import SanaVelocityNet, student_transformer
        from tbcm.models.student import Student
        from tbcm.models.teacher import Teacher
        from tbcm.models.condition import TextCondition
        from tbcm.objectives.scm import SCMConfig
        from tbcm.pairs.pool import TrajectoryPool
        from tbcm.pairs.rollout_teacher import rollout_teacher
        from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

        diffusers.utils.logging.set_verbosity_error()  # not the "cast with to()" notes of the bf16 casts
        self.import_rss = (_status_kb("VmRSS") or 0.0) / 1024
        if case["threads"]:
            torch.set_num_threads(case["threads"])
        self.torch, self.case = torch, case
        self.device = device = torch.device(case["device"])
        self.bf16 = case["dtype"] == "bf16"
        low = torch.bfloat16 if self.bf16 else torch.float32
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        self.latent = (32, case["px"] // VAE_FACTOR, case["px"] // VAE_FACTOR)
        t_setup = time.perf_counter()
        config = {**SANA_600M, "num_layers": case["depth"], "sample_size": self.latent[1]}
        with torch.device(device):  # initialise on the device: a CPU init of two 0.6B models takes a minute
            transformer = SanaTransformer2DModel(**config).eval()
            student_net = SanaVelocityNet(student_transformer(transformer, 1000.0, refit_steps=10), 1.0).float()
        self.student = Student(student_net, SIGMA_D, 1.0).to(device).train()
        transformer.to(device=device, dtype=low).requires_grad_(False)
        null = random_conds(1, "cpu", gen)
        null = TextCondition(null.embeds, torch.zeros_like(null.mask))
        null.mask[:, :8] = 1  # the empty prompt: a few special tokens
        plain = Teacher(SanaVelocityNet(transformer, 1000.0), NullEncoder(null), SIGMA_D, timestep_scale=1.0)
        self.teacher = rollout_teacher(plain, case["rollout_dtype"], case["rollout_compile"])
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
        self.ema = EMA(self.student, 0.99)
        self.scm_cfg = SCMConfig()  # autograd JVP, tangent normalisation c = 0.1
        k, n = case["route_points"], case["pairs"]
        self.prompts = n // (k - 1)
        self.info = {"params_teacher": count(transformer), "params_student": count(self.student)}
        if device.type == "cuda":
            self.info["device_name"] = torch.cuda.get_device_name(device)
            self.info["sdpa"] = {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                 "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled()}
        if case["kind"] == "scm":
            with torch.device(device):
                self.vae = AutoencoderDC(**DC_AE_F32C32_SANA).eval().requires_grad_(False).to(device=device, dtype=low)
            self.info["params_vae"], self.info["params_vae_encoder"] = count(self.vae), count(self.vae.encoder)
            self.conds = random_conds(n, device, gen)
            self.fwd_gen = torch.Generator().manual_seed(1)
            self.images = case["encode_images"] or n
        else:
            # distinct prompts for every trajectory the timed steps can ask for
            conds = random_conds(max(case["pool_prompts"], self.prompts), device, gen)
            source = TrajectoryPairSource(self.teacher, conds, CFG_SCALES, self.latent, TrajectoryConfig(route_points=k),
                                          blank_value=0.0, generator=torch.Generator().manual_seed(1))
            if case["kind"] == "tbcm_pool":
                source = TrajectoryPool(source, case["pool_prompts"], 1, torch.Generator().manual_seed(2))
            self.source = source
        self.info["setup_s"] = time.perf_counter() - t_setup

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def student_step(self, pairs) -> None:
        from tbcm.objectives.scm import scm_loss

        loss, _ = scm_loss(self.student, pairs, SIGMA_D, 1.0, self.scm_cfg, bf16=self.bf16)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        self.ema.update(self.student)

    def step(self) -> dict:
        from tbcm.pairs.forward import ForwardConfig, ForwardNoisePairSource

        torch, n, px = self.torch, self.case["pairs"], self.case["px"]
        phases = {"encoder": 0.0, "encoder_per_image": 0.0}
        if self.case["kind"] == "scm":
            low = torch.bfloat16 if self.bf16 else torch.float32
            images = torch.rand(self.images, 3, px, px, generator=self.fwd_gen).to(self.device, low) * 2 - 1
            self.sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                latents = self.vae.encode(images, return_dict=False)[0]
            x0 = SIGMA_D * self.vae.config.scaling_factor * latents.float()  # TrigFlow state of the clean latent
            x0 = x0.repeat((n + len(x0) - 1) // len(x0), 1, 1, 1)[:n]  # M encoded latents tiled to N pairs
            self.sync()
            t1 = time.perf_counter()
            phases["encoder"], phases["encoder_per_image"] = t1 - t0, (t1 - t0) / self.images
            forward = ForwardNoisePairSource(self.teacher, x0, self.conds, CFG_SCALES, 1, ForwardConfig(), self.fwd_gen)
            pairs = forward.next_pairs(n)
        else:
            self.sync()
            t0 = t1 = time.perf_counter()
            pairs = self.source.next_pairs(self.prompts)
        self.sync()
        t2 = time.perf_counter()
        phases["teacher"] = t2 - t1
        assert len(pairs) == n, (len(pairs), n)
        self.student_step(pairs)
        self.sync()
        phases["student"] = time.perf_counter() - t2
        phases["measured"] = time.perf_counter() - t0
        return phases


def worker(case: dict) -> None:
    """The protocol: ``@@{"ready": info}`` after setup, then one ``@@{phases}`` line per ``step``
    read on stdin, ``@@{"peak_mb": ...}`` on ``finish``. Other output is the libraries'."""
    def emit(obj) -> None:
        sys.stdout.write("@@" + json.dumps(obj) + "\n")
        sys.stdout.flush()

    c = Case(case)
    memory_kind = reset_peak(c.device)
    emit({"ready": {**c.info, "import_rss_mb": c.import_rss, "resident_after_setup_mb": peak_mb(c.device),
                    "memory": memory_kind, "threads": c.torch.get_num_threads()}})
    for line in sys.stdin:
        if line.strip() == "step":
            cpu0 = cpu_seconds()
            phases = c.step()
            emit({**phases, "cpu_s": cpu_seconds() - cpu0})
        elif line.strip() == "finish":
            emit({"peak_mb": peak_mb(c.device)})
            return


# -- the driver ------------------------------------------------------------------------------

def case_id(case: dict) -> str:
    return f"{case['kind']}@{case['px']}/{case['pairs']}"


def plan(spec: dict) -> list[list[dict]]:
    """Groups of cases, one group per image size (interleaved together); the paper's setting
    joins the 1024 px group (its TBCM side is the ``tbcm`` case when N = K - 1)."""
    base = {k: spec[k] for k in ("depth", "route_points", "pool_prompts", "dtype", "device", "threads",
                                 "encode_images", "rollout_dtype", "rollout_compile")}
    groups = []
    for px in spec["sizes"]:
        group = [{**base, "kind": kind, "px": px, "pairs": spec["pairs"]} for kind in KINDS]
        if px == 1024 and spec["paper"]:
            for kind, n in (("tbcm", spec["route_points"] - 1), ("scm", PAPER_SCM_BATCH)):
                if all(case_id(c) != f"{kind}@1024/{n}" for c in group):
                    group.append({**base, "kind": kind, "px": 1024, "pairs": n})
        groups.append(group)
    return groups


class Proc:
    """A worker process speaking the ``@@`` protocol; ``error`` is set once it fails."""

    def __init__(self, case: dict):
        self.case, self.error, self.steps, self.info, self.final = case, None, [], {}, {}
        env = dict(os.environ)
        if case["threads"]:
            env["OMP_NUM_THREADS"] = str(case["threads"])
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply() or {}
        self.info = self.info.get("ready", self.info)

    def _reply(self) -> dict | None:
        if self.error:
            return None
        for line in self.p.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
            sys.stderr.write(line)
        self.error = f"the worker exited with status {self.p.wait()}"
        return None

    def ask(self, command: str) -> dict | None:
        if self.error:
            return None
        try:
            self.p.stdin.write(command + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            self.error = f"the worker exited with status {self.p.wait()}"
            return None
        return self._reply()

    def close(self) -> None:
        self.final = self.ask("finish") or {}
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)


def summarise(proc: Proc, warmup: int) -> dict:
    """Mean per pair over the timed steps; the encoder counted once per pair (per encoded image)."""
    case, out = proc.case, {"case": proc.case, **proc.info}
    timed = proc.steps[warmup:]
    if proc.error or not timed or "peak_mb" not in proc.final:
        return {**out, "error": proc.error or "no timed steps"}
    n = case["pairs"]
    mean = {key: sum(s[key] for s in timed) / len(timed) for key in timed[0]}
    ms = {"encoder": 1000 * mean["encoder_per_image"], "teacher": 1000 * mean["teacher"] / n,
          "student": 1000 * mean["student"] / n}
    ms["total"] = ms["encoder"] + ms["teacher"] + ms["student"]
    return {**out, "prompts_per_step": n // (case["route_points"] - 1) if case["kind"] != "scm" else None,
            "timed_steps": len(timed), "step_s": [s["measured"] for s in timed], "mean_s": mean, "ms_per_pair": ms,
            "step_s_counted": ms["total"] * n / 1000, "peak_mb": proc.final["peak_mb"],
            "cpu_ms_per_pair": 1000 * sum(s["cpu_s"] for s in timed) / (len(timed) * n),
            # CPU time over wall time x threads: well under 1 = other processes took the cores
            "cpu_share": sum(s["cpu_s"] for s in timed) / (sum(s["measured"] for s in timed) * proc.info["threads"])}


def machine(spec: dict, cases: dict) -> str:
    import torch  # the driver never touches CUDA: the workers' device name is reported

    if spec["device"] == "cuda":
        names = sorted({c["device_name"] for c in cases.values() if "device_name" in c}) or ["GPU (no case ran)"]
        return f"{', '.join(names)}, CUDA {torch.version.cuda}, torch {torch.__version__}, {os.cpu_count()} CPU cores"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {spec['threads'] or torch.get_num_threads()} "
            f"torch thread(s), torch {torch.__version__}")


def measure(spec: dict, command: str, json_path: Path | None = None) -> dict:
    """Every group in turn; inside a group the cases take their steps in turn (or one case after
    the other with ``sequential``). With ``json_path`` the result so far is written after each group."""
    import diffusers

    result = {"command": command, "date": str(datetime.date.today()), "device": spec["device"],
              "diffusers": diffusers.__version__, "settings": spec, "cases": {}}
    t0 = time.perf_counter()
    total = spec["warmup"] + spec["steps"]
    for group in plan(spec):
        if spec["sequential"]:
            batches = [[case] for case in group]
        else:
            batches = [group]
        for batch in batches:
            procs = []
            for case in batch:  # set up one at a time, so set-ups do not share the cores
                print(f"setting up {case_id(case)} ...", flush=True)
                procs.append(Proc(case))
            for i in range(total):
                for proc in procs:
                    reply = proc.ask("step")
                    if reply is not None:
                        proc.steps.append(reply)
                        print(f"  {case_id(proc.case)} step {i + 1}/{total}: {reply['measured']:.1f} s", flush=True)
            for proc in procs:
                proc.close()
                result["cases"][case_id(proc.case)] = summarise(proc, spec["warmup"])
        result["wall_s"] = time.perf_counter() - t0
        result["machine"] = machine(spec, result["cases"])
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=1))
    return result


# -- the report ------------------------------------------------------------------------------

def _get(res: dict, kind: str, px: int, pairs: int) -> dict | None:
    c = res["cases"].get(f"{kind}@{px}/{pairs}")
    return None if c is None or "error" in c else c


def ratio_rows(res: dict) -> list[dict]:
    """Per image size: pool / sCM, no pool / sCM, pool / no pool (time, teacher, memory per pair);
    then the paper's setting (per step and per pair)."""
    s, rows = res["settings"], []
    for px in s["sizes"]:
        a = {kind: _get(res, kind, px, s["pairs"]) for kind in KINDS}
        for num, den in (("tbcm_pool", "scm"), ("tbcm", "scm"), ("tbcm_pool", "tbcm")):
            x, y = a[num], a[den]
            if x is None or y is None:
                continue
            rows.append({"px": px, "what": f"{num} / {den}", "time": x["ms_per_pair"]["total"] / y["ms_per_pair"]["total"],
                         "teacher": x["ms_per_pair"]["teacher"] / y["ms_per_pair"]["teacher"],
                         "memory": x["peak_mb"] / y["peak_mb"], "cpu_time": x["cpu_ms_per_pair"] / y["cpu_ms_per_pair"]})
    t, c = _get(res, "tbcm", 1024, s["route_points"] - 1), _get(res, "scm", 1024, PAPER_SCM_BATCH)
    if s["paper"] and t is not None and c is not None:
        rows.append({"px": 1024, "what": f"paper setting: TBCM 1 x {s['route_points'] - 1} / sCM {PAPER_SCM_BATCH}, per step",
                     "time": t["step_s_counted"] / c["step_s_counted"], "teacher": t["mean_s"]["teacher"] / c["mean_s"]["teacher"],
                     "memory": t["peak_mb"] / c["peak_mb"], "cpu_time": None})
        rows.append({"px": 1024, "what": "paper setting, per pair",
                     "time": t["ms_per_pair"]["total"] / c["ms_per_pair"]["total"],
                     "teacher": t["ms_per_pair"]["teacher"] / c["ms_per_pair"]["teacher"],
                     "memory": t["peak_mb"] / c["peak_mb"], "cpu_time": None})
    return rows


def targets(res: dict) -> list[str]:
    """Issue 14's targets, met or missed, on this result's rows."""
    s, out = res["settings"], []
    if res["device"] == "cpu":
        for px in s["sizes"]:
            y = _get(res, "scm", px, s["pairs"])
            for kind in ("tbcm_pool", "tbcm"):
                x = _get(res, kind, px, s["pairs"])
                if x is None or y is None:
                    continue
                r = x["ms_per_pair"]["teacher"] / y["ms_per_pair"]["teacher"]
                out.append(f"CPU target, {px} px, {KINDS[kind]}: teacher ms per pair {r:.2f}x sCM's "
                           f"({'met' if r <= CPU_TEACHER_TARGET else 'missed'}: <= {CPU_TEACHER_TARGET})")
    else:
        x, y = _get(res, "tbcm_pool", 1024, s["pairs"]), _get(res, "scm", 1024, s["pairs"])
        if x is not None and y is not None and s["depth"] == 28:
            for key, val in (("time", x["ms_per_pair"]["total"] / y["ms_per_pair"]["total"]),
                             ("memory", x["peak_mb"] / y["peak_mb"])):
                ok = val <= GPU_TARGETS[key]
                out.append(f"GPU target, 1024 px, pool: {key} per pair {val:.2f}x sCM's "
                           f"({'met' if ok else 'missed'}: <= {GPU_TARGETS[key]})")
    return out


def table(res: dict) -> list[str]:
    s, cpu = res["settings"], res["device"] == "cpu"
    cols = ["px", "step kind", "pairs / step", "guided teacher calls / step", "ms / pair", "encoder", "teacher",
            "student step"]
    cols += ["CPU ms / pair, as run", "CPU share"] if cpu else []
    cols += ["peak MB"] + (["peak MB above the imports"] if cpu else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    k, q = s["route_points"], s["pool_prompts"]
    for key, c in res["cases"].items():
        case = c["case"]
        label = KINDS[case["kind"]]
        if case["kind"] == "tbcm_pool":
            label += f" (Q = {q} prompts)"
        if case["kind"] == "scm" and case["pairs"] == PAPER_SCM_BATCH and case["pairs"] != s["pairs"]:
            label += " (paper's batch)"
        if "error" in c:
            lines.append(f"| {case['px']} | {label} | {case['pairs']} | failed: {c['error']} |" + " |" * (len(cols) - 4))
            continue
        calls = case["pairs"] if case["kind"] == "scm" else f"{k * case['pairs'] / (k - 1):g} (amortised)" \
            if case["kind"] == "tbcm_pool" else k * case["pairs"] // (k - 1)
        ms = c["ms_per_pair"]
        cells = [str(case["px"]), label, str(case["pairs"]), str(calls),
                 *(f"{ms[p]:.0f}" if ms[p] >= 10 else f"{ms[p]:.1f}" for p in ("total", "encoder", "teacher", "student"))]
        cells += [f"{c['cpu_ms_per_pair']:.0f}", f"{c['cpu_share']:.0%}"] if cpu else []
        cells += [f"{c['peak_mb']:.0f}"] + ([f"{c['peak_mb'] - c['import_rss_mb']:.0f}"] if cpu else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| px | ratio | ms / pair | teacher ms / pair | peak MB" + (" | CPU ms / pair, as run" if cpu else "") + " |",
              "|---|---|---|---|---|" + ("---|" if cpu else "")]
    for r in ratio_rows(res):
        cells = [str(r["px"]), r["what"], f"{r['time']:.2f}", f"{r['teacher']:.2f}", f"{r['memory']:.2f}"]
        cells += [f"{r['cpu_time']:.2f}" if r["cpu_time"] is not None else ""] if cpu else []
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| - | paper (TBCM / sCM) | {PAPER['time']:.2f} | | {PAPER['memory']:.2f}" + (" | " if cpu else "") + " |")
    enc = s["encode_images"]
    any_case = next((c for c in res["cases"].values() if "error" not in c), None)
    notes = (f"Settings: depth {s['depth']} of 28 blocks, weights {s['dtype']}, rollout {s['rollout_dtype']}"
             f"{' compiled' if s['rollout_compile'] else ''}, K = {k} route points, {s['pairs']} pairs per step in every "
             f"kind (TBCM: {s['pairs'] // (k - 1)} prompt(s) x {k - 1} points; sCM: {s['pairs']} images, 1 guided "
             f"teacher call each), pool of Q = {q} prompts (a refill every {q * (k - 1) // s['pairs']} steps), "
             f"{s['warmup']} warm-up + {s['steps']} timed steps per case, mean per pair; "
             f"{'interleaved: the cases of one size take their steps in turn' if not s['sequential'] else 'one case after the other'}."
             + (f" sCM encodes {enc} image(s) per step, tiled to the pairs; the encoder column is its time per image, "
                "counted once per pair, and sCM's peak memory is that of a "
                f"{enc}-image encode (in sCM's favour)." if enc else "")
             + (" CPU ms, as run: user + system time of the process per pair, with only the images sCM really "
                "encoded (not scaled like the encoder column); CPU share: that over wall time x threads (well under "
                "100% = other processes held the cores)." if cpu else ""))
    if any_case is not None:
        notes += (f" Parameters: teacher {any_case['params_teacher'] / 1e6:.1f} M, student "
                  f"{any_case['params_student'] / 1e6:.1f} M. Memory: {any_case['memory']}.")
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
    return [head, "", *table(res), "", *(f"- {t}" for t in targets(res))]


GPU_MISSING = (
    "**GPU, full depth (28 blocks), bf16**: not measured (no GPU was lent for this round). Prepared: "
    "`bash benchmarks/gpu_side_by_side.sh` on a CUDA machine, then "
    "`python benchmarks/sana_real_shape.py --no-measure --gpu-json gpu_side_by_side.json --write-results` here. "
    "The GPU targets (1024 px, pool: time per pair <= 0.75x sCM's, peak memory <= 0.9x) are therefore not measured.")


def render(slots: dict) -> str:
    lines = [*section(slots.get("cpu"), "**CPU**: not measured."), "", *section(slots.get("gpu"), GPU_MISSING)]
    data = json.dumps({k: v for k, v in slots.items() if v is not None}, separators=(",", ":"))
    lines += ["", f"<!-- {BLOCK}:data {data.replace('>', chr(92) + 'u003e')} -->"]
    return "\n".join(lines)


def _store():
    if str(ROOT) not in sys.path:  # `benchmarks.harness` from the repository root
        sys.path.insert(0, str(ROOT))
    from benchmarks.harness.store import Store

    return Store()


def doc_slots() -> dict:
    """The CPU and GPU slots recorded last in the results store."""
    rows = _store().latest(STORE_TABLE)
    return dict(rows[-1]["slots"]) if rows else {}


def record_slots(slots: dict) -> None:
    """Append the slots to the results store, with a manifest (report.py prints them)."""
    from benchmarks.harness.store import manifest

    store = _store()
    store.append(STORE_TABLE, {"key": BLOCK, "label": BLOCK, "slots": {k: v for k, v in slots.items() if v is not None},
                               "manifest": manifest(["python", "benchmarks/sana_real_shape.py", *sys.argv[1:]])})
    print(f"recorded in {store.path(STORE_TABLE).relative_to(ROOT)}; "
          "docs/results.md: python benchmarks/report.py --write docs/results.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, help="transformer blocks (default 1; --full: 28)")
    ap.add_argument("--sizes", default="512,1024", help="image sizes in px, comma-separated (multiples of 32)")
    ap.add_argument("--pairs", type=int, help="pairs per step N in every kind, a multiple of K - 1 (default K - 1)")
    ap.add_argument("--route-points", type=int, default=16, help="K, TBCM route points per prompt")
    ap.add_argument("--pool-prompts", type=int, help="Q, the pool's prompts per refill (default 2; --full: 8)")
    ap.add_argument("--steps", type=int, help="timed steps per case, whole pool refills (default: one refill)")
    ap.add_argument("--warmup", type=int, help="untimed steps per case first, whole pool refills (default 0; --full: one refill)")
    ap.add_argument("--encode-images", type=int, help="sCM images encoded per step, 0 = all (default 1; --full: 0)")
    ap.add_argument("--no-paper", action="store_true", help="leave out the paper's setting (sCM batch 16 at 1024 px)")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default cpu; --full: cuda")
    ap.add_argument("--dtype", choices=["fp32", "bf16"],
                    help="bf16: teacher and VAE weights in bf16, student gradient forward under bf16 autocast (the JVP "
                         "stays fp32, as precision=bf16 in training); default fp32, --full: bf16")
    ap.add_argument("--rollout-dtype", choices=["fp32", "bf16"], default="fp32",
                    help="pairs.rollout_dtype for the teacher calls of every kind")
    ap.add_argument("--rollout-compile", action="store_true", help="pairs.rollout_compile for every kind's teacher calls")
    ap.add_argument("--sequential", action="store_true", help="one case after the other (default on CUDA)")
    ap.add_argument("--full", action="store_true", help="the GPU run: depth 28, bf16, cuda, sequential")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (0: torch's default)")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--write-results", action="store_true",
                    help="record the result in the results store (report.py prints it in docs/results.md)")
    ap.add_argument("--cpu-json", type=Path, help="a CPU result (from --json) to show in the doc")
    ap.add_argument("--gpu-json", type=Path, help="a GPU result (from --json) to show in the doc")
    ap.add_argument("--no-measure", action="store_true", help="measure nothing; render the doc from the JSON files")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker(json.loads(args.worker))
        return

    f = args.full
    k = args.route_points
    pairs = args.pairs or (k - 1)
    q = args.pool_prompts or (8 if f else 2)
    if k < 2 or pairs % (k - 1):
        ap.error(f"--pairs {pairs} must be a positive multiple of K - 1 = {k - 1}")
    p = pairs // (k - 1)
    if q % p:
        ap.error(f"--pool-prompts {q} must be a multiple of the prompts per step, {p}, so refills are whole steps")
    cycle = q // p  # steps per refill
    spec = {"depth": args.depth or (28 if f else 1), "sizes": [int(x) for x in args.sizes.split(",") if x],
            "pairs": pairs, "route_points": k, "pool_prompts": q,
            "steps": args.steps if args.steps is not None else cycle,
            "warmup": args.warmup if args.warmup is not None else (cycle if f else 0),
            "encode_images": args.encode_images if args.encode_images is not None else (0 if f else 1),
            "paper": not args.no_paper, "device": args.device or ("cuda" if f else "cpu"),
            "dtype": args.dtype or ("bf16" if f else "fp32"), "rollout_dtype": args.rollout_dtype,
            "rollout_compile": args.rollout_compile, "sequential": args.sequential or f or args.device == "cuda",
            "threads": args.threads}
    if spec["steps"] < 1 or spec["steps"] % cycle or spec["warmup"] % cycle:
        ap.error(f"--steps and --warmup must be multiples of {cycle} (the steps a pool refill serves), --steps >= 1")
    if not 1 <= spec["depth"] <= 28:
        ap.error("--depth must be 1..28 (Sana-0.6B has 28 blocks)")
    if any(px < 32 or px % 32 for px in spec["sizes"]):
        ap.error("--sizes must be multiples of 32 px (the DC-AE's factor)")

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
        shares = {key: c["cpu_share"] for key, c in res["cases"].items() if "cpu_share" in c}
        if res["device"] == "cpu" and any(v < 0.8 for v in shares.values()):
            print(f"note: other processes took CPU time ({', '.join(f'{k} {v:.0%}' for k, v in shares.items())} "
                  "of a core): wall times are inflated; the cases were interleaved, so alike")
    if args.write_results:
        record_slots(slots)


if __name__ == "__main__":
    main()
