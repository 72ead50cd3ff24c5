"""Arithmetic of training-state memory per GPU for a Sana-size student (not a measurement).

    python benchmarks/memory_plan.py [--gpus 8 32]

Per parameter: student fp32 weights 4 B + fp32 grads 4 B + AdamW moments 8 B + fp32 EMA 4 B;
frozen teacher in bf16 2 B; text encoder (Gemma-2 2B, bf16) only while prompts are encoded --
tbcm caches the embeddings once, so it can be unloaded before training.  DDP replicates the
student state on every GPU; FSDP2 shards it (weights, grads, moments, EMA) over the GPUs.
Activations are not included: they depend on resolution, batch and gradient checkpointing and
must be measured on the GPU.
"""

from __future__ import annotations

import argparse

GB = 1e9
SIZES = {"Sana 0.6B": 0.6e9, "Sana 1.6B": 1.6e9}  # nominal parameter counts from the model names
TEXT_ENCODER = 2.6e9  # Gemma-2 2B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 32])
    args = ap.parse_args()
    print("| model | GPUs | student state, DDP (GB/GPU) | student state, FSDP2 (GB/GPU) | "
          "teacher bf16 (GB/GPU) | text encoder bf16, encode phase only (GB) |")
    print("|---|---|---|---|---|---|")
    for name, n in SIZES.items():
        student = n * (4 + 4 + 8 + 4) / GB
        for g in args.gpus:
            print(f"| {name} | {g} | {student:.1f} | {student / g:.2f} | {n * 2 / GB:.1f} | {TEXT_ENCODER * 2 / GB:.1f} |")


if __name__ == "__main__":
    main()
