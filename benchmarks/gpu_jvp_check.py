"""The student's JVP at Sana-0.6B width on a GPU: math cross-attention vs the fused SDPA kernels.

For a Sana-0.6B-wide student (hidden 1152, 36 x 32 linear self-attention heads, 16 x 72
cross-attention heads, 300 text tokens, 16 x 16 latents = 512 px) with random weights:

1. forward-mode AD (``torch.func.jvp``) through the student as tbcm builds it (math
   cross-attention), fp32, compared with a central finite difference (h = 1e-3, 1e-4);
2. the same JVP with diffusers' default fused ``SanaAttnProcessor2_0`` (SDPA): does forward-mode
   AD run through the CUDA kernels, and if so does it agree;
3. the same with the student in bf16 (the JVP of a bf16 student is what ``precision=bf16`` would
   give if the JVP were not kept in fp32), error against the fp32 JVP;
4. time and peak memory of one JVP for each variant.

    python benchmarks/gpu_jvp_check.py --json OUT.json [--depth 28]

Prints a markdown table; needs CUDA (falls back to CPU with a small depth for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def sana_06b_student(depth: int, device, dtype=torch.float32):
    from diffusers import SanaTransformer2DModel

    from tbcm.models.families.sana.network import SanaVelocityNet, use_math_cross_attention
    from tbcm.models.student import Student

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: a CPU init of 0.6B parameters takes minutes
        transformer = SanaTransformer2DModel(
            in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=depth,
            num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
            caption_channels=2304, mlp_ratio=2.5, sample_size=16, patch_size=1, guidance_embeds=True)
    torch.manual_seed(0)
    with torch.no_grad():  # random weights everywhere (diffusers zero-inits some layers), so every path counts
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    use_math_cross_attention(transformer)
    return Student(SanaVelocityNet(transformer, 1.0), 0.5, 1.0).to(device=device, dtype=dtype).eval()


def set_sdpa(student) -> None:
    from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0

    from tbcm.models.families.sana.network import MathCrossAttnProcessor

    t = student.network.transformer
    t.set_attn_processor({n: (SanaAttnProcessor2_0() if isinstance(p, MathCrossAttnProcessor) else p)
                          for n, p in t.attn_processors.items()})


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return out, (time.perf_counter() - start) * 1000, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=28)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    from tbcm.models.condition import TextCondition

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    depth = args.depth if device.type == "cuda" else min(args.depth, 2)
    b = args.batch
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, 32, 16, 16, generator=gen).to(device)
    dx = torch.randn(b, 32, 16, 16, generator=gen).to(device)
    t = torch.rand(b, generator=gen).to(device) * 1.4 + 0.1
    embeds = torch.randn(b, 300, 2304, generator=gen).to(device)
    mask = torch.zeros(b, 300, device=device)
    mask[:, :40] = 1
    cond = TextCondition(embeds, mask)
    w = torch.full((b,), 4.5, device=device)
    rows, result = [], {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                        "depth": depth, "batch": b, "torch": torch.__version__}

    student = sana_06b_student(depth, device)

    def jvp_of(model, dtype):
        c = TextCondition(cond.embeds.to(dtype), cond.mask)
        f = lambda xx, tt: model(xx, tt, c, w.to(dtype))  # noqa: E731
        with torch.no_grad():
            return torch.func.jvp(f, (x.to(dtype), t.to(dtype)), (dx.to(dtype), torch.ones_like(t, dtype=dtype)))[1]

    (ref, ms, mem) = timed(lambda: jvp_of(student, torch.float32), device)
    scale = ref.abs().max().item()
    with torch.no_grad():
        f = lambda xx, tt: student(xx, tt, cond, w)  # noqa: E731
        fd_err = {h: ((f(x + h * dx, t + h) - f(x - h * dx, t - h)) / (2 * h) - ref).abs().max().item() / scale
                  for h in (1e-2, 1e-3)}
    rows.append(("math cross-attn, fp32", f"{ms:.0f}", f"{mem:.0f}", f"FD h=1e-2: {fd_err[1e-2]:.2e}, "
                 f"h=1e-3: {fd_err[1e-3]:.2e} (relative max error)"))
    result["math_fp32"] = {"ms": ms, "peak_mb": mem, "fd_rel_err": {str(k): v for k, v in fd_err.items()}}

    set_sdpa(student)
    try:
        (sdpa, ms, mem) = timed(lambda: jvp_of(student, torch.float32), device)
        err = (sdpa - ref).abs().max().item() / scale
        rows.append(("fused SDPA cross-attn, fp32", f"{ms:.0f}", f"{mem:.0f}", f"vs math JVP: {err:.2e}"))
        result["sdpa_fp32"] = {"ms": ms, "peak_mb": mem, "rel_err_vs_math": err}
    except Exception as exc:  # noqa: BLE001 - the point is to record what the kernels do
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        rows.append(("fused SDPA cross-attn, fp32", "-", "-", f"fails: {msg}"))
        result["sdpa_fp32"] = {"error": msg}
    for name, attn in (("math", "math"), ("SDPA", "sdpa")):
        s16 = sana_06b_student(depth, device, torch.bfloat16)
        if attn == "sdpa":
            set_sdpa(s16)
        try:
            (j16, ms, mem) = timed(lambda m=s16: jvp_of(m, torch.bfloat16), device)
            err = (j16.float() - ref).abs().max().item() / scale
            rel_rms = ((j16.float() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
            rows.append((f"{name} cross-attn, bf16 student", f"{ms:.0f}", f"{mem:.0f}",
                         f"vs fp32 JVP: max {err:.2e}, rms {rel_rms:.2e}"))
            result[f"{attn}_bf16"] = {"ms": ms, "peak_mb": mem, "rel_err_vs_fp32": err, "rel_rms_vs_fp32": rel_rms}
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            rows.append((f"{name} cross-attn, bf16 student", "-", "-", f"fails: {msg}"))
            result[f"{attn}_bf16"] = {"error": msg}

    print(f"JVP of a Sana-0.6B-wide student (depth {depth}, batch {b}) on {result['device']}")
    print("| variant | JVP ms | peak MB | check |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
