"""Cost per step of the data-free adversarial term, side by side in one process.

Two distillers of the embedded default, one with ``objective.adversarial.weight`` > 0, take
steps in turn (so machine load falls on both alike); prints ms per step of each, the ratio, (and the
process's peak RSS, which cannot isolate the term's own memory on a CPU).

    python benchmarks/adversarial_cost.py --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each (after 2 warm-up steps)")
    ap.add_argument("--weight", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tbcm.config import DistillConfig, load_config
    from tbcm.distill import Distiller, peak_memory_mb

    common = ["threads=1", "text_cache=none"]
    plain = Distiller(load_config(DistillConfig, None, common))
    mem_plain = peak_memory_mb(plain.device)
    adv = Distiller(load_config(DistillConfig, None, [*common, f"objective.adversarial.weight={args.weight}"]))
    times = {"plain": [], "adversarial": []}
    for i in range(args.steps + 2):
        for name, d in (("plain", plain), ("adversarial", adv)):
            start = time.perf_counter()
            d.train_step()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    ms = {k: 1000 * sum(v) / len(v) for k, v in times.items()}
    print(f"ms per step (120 pairs): plain {ms['plain']:.0f}, adversarial {ms['adversarial']:.0f}, "
          f"ratio {ms['adversarial'] / ms['plain']:.2f}x; {args.steps} steps each, in turn, one thread")
    print(f"peak RSS: {mem_plain:.0f} MB after building the plain distiller, {peak_memory_mb(adv.device):.0f} MB "
          "with both (a whole second distiller: not the adversarial term's own memory)")


if __name__ == "__main__":
    main()
