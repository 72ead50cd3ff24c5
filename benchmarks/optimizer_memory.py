"""Optimizer-state memory of a Sana-0.6B-shaped student: AdamW against CAME.

Two numbers per optimizer, printed side by side:

* the full-size student (28 blocks, built on the meta device, so nothing is allocated): the state
  each optimizer would hold, counted from the parameter shapes (AdamW: two fp32 moments per
  weight; CAME: one fp32 moment plus factored row/column statistics for matrices);
* a real CPU run at reduced depth (``--depth``, default 2 blocks): one optimiser step, then the
  bytes of every tensor in ``optimizer.state`` -- which checks the counting rule on the real
  optimizers.

    python benchmarks/optimizer_memory.py [--depth 2] [--write-doc]
"""

from __future__ import annotations

import argparse
import datetime
import platform

import torch

from sana_real_shape import SANA_600M_512
from results_doc import write_block
from tbcm.config import OptimConfig
from tbcm.train.optim import make_optimizer

MB = 2**20


def counted_state_bytes(params: list[torch.nn.Parameter], name: str) -> int:
    """Bytes of fp32 optimizer state the rule predicts (CAME as pytorch-optimizer implements it)."""
    total = 0
    for p in params:
        n = p.numel()
        if name == "adamw":
            total += 2 * n * 4  # exp_avg, exp_avg_sq (+ a 0-d step, ignored)
        elif p.ndim >= 2:
            rows = n // p.shape[-1]
            cols = n // p.shape[-2]
            total += n * 4 + 2 * (rows + cols) * 4 + 4  # exp_avg, sq/res rows and cols, RMS
        else:
            total += 2 * n * 4 + 4  # exp_avg, exp_avg_sq, RMS
    return total


def measured_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v) and v.ndim > 0)


def build(depth: int, device: str):
    from diffusers import SanaTransformer2DModel

    with torch.device(device):
        return SanaTransformer2DModel(**{**SANA_600M_512, "num_layers": depth, "guidance_embeds": True})


def configs() -> dict[str, OptimConfig]:
    return {"adamw": OptimConfig(name="adamw", lr=1e-5),
            "came": OptimConfig(name="came", lr=1e-5, betas=[0.9, 0.999, 0.9999])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    full = [p for p in build(28, "meta").parameters()]
    n_full = sum(p.numel() for p in full)
    small = build(args.depth, "cpu")
    x = torch.randn(1, 32, 16, 16)
    rows = []
    for name, cfg in configs().items():
        model = build(args.depth, "cpu")
        model.load_state_dict(small.state_dict())
        opt = make_optimizer(model.parameters(), cfg)
        out = model(hidden_states=x, encoder_hidden_states=torch.randn(1, 8, 2304), timestep=torch.tensor([0.5]),
                    guidance=torch.tensor([4.5]), return_dict=False)[0]
        out.pow(2).mean().backward()
        opt.step()
        params = list(model.parameters())
        rows.append((name, counted_state_bytes(full, name), counted_state_bytes(params, name),
                     measured_state_bytes(opt)))
    adam_full = rows[0][1]
    lines = [f"Sana-0.6B-shaped student with a guidance embedder: {n_full / 1e6:.0f} M parameters "
             f"(fp32 weights {n_full * 4 / 1e9:.2f} GB).", "",
             f"| optimizer | state, full size (counted) | / AdamW | state at depth {args.depth}: counted | measured |",
             "|---|---|---|---|---|"]
    for name, full_b, small_counted, small_measured in rows:
        lines.append(f"| {name} | {full_b / 1e9:.2f} GB | {full_b / adam_full:.2f} | {small_counted / MB:.1f} MB | "
                     f"{small_measured / MB:.1f} MB |")
    lines += ["", f"`python benchmarks/optimizer_memory.py --depth {args.depth}`; {platform.machine()}, torch "
              f"{torch.__version__}, {datetime.date.today()}. Per GPU under FSDP2 divide by the number of GPUs."]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_block("optimizer_memory", text, heading="## Optimizer state: AdamW vs CAME (Sana-0.6B shapes)")


if __name__ == "__main__":
    main()
