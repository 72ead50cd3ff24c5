"""Cost per step of the data-free adversarial (or distribution-matching) term, side by side in one process.

Two distillers of the embedded default, one with ``objective.adversarial.weight`` (or
``objective.distribution_matching.weight``, ``--term distribution_matching``) > 0, take
steps in turn (so machine load falls on both alike); prints ms per step of each, the ratio, (and the
process's peak RSS, which cannot isolate the term's own memory on a CPU).

    python benchmarks/adversarial_cost.py --steps 20
    python benchmarks/adversarial_cost.py --steps 20 --term distribution_matching --weight 0.25 \
        --set objective.distribution_matching.critic_steps=4
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each (after 2 warm-up steps)")
    ap.add_argument("--weight", type=float, default=0.1)
    ap.add_argument("--term", choices=("adversarial", "distribution_matching"), default="adversarial")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more overrides of the term's distiller, e.g. objective.distribution_matching.critic_steps=4")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller
    from tbcm.train.outputs import peak_memory_mb

    common = ["threads=1", "text_cache=none"]
    plain = Distiller(load_config(DistillConfig, None, common))
    mem_plain = peak_memory_mb(plain.device)
    term = args.term
    adv = Distiller(load_config(DistillConfig, None, [*common, f"objective.{term}.weight={args.weight}", *args.set]))
    times = {"plain": [], term: []}
    for i in range(args.steps + 2):
        for name, d in (("plain", plain), (term, adv)):
            start = time.perf_counter()
            d.train_step()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    ms = {k: 1000 * sum(v) / len(v) for k, v in times.items()}
    print(f"ms per step (120 pairs): plain {ms['plain']:.0f}, {term} {ms[term]:.0f}, "
          f"ratio {ms[term] / ms['plain']:.2f}x; {args.steps} steps each, in turn, one thread")
    print(f"peak RSS: {mem_plain:.0f} MB after building the plain distiller, {peak_memory_mb(adv.device):.0f} MB "
          f"with both (a whole second distiller: not the {term} term's own memory)")


if __name__ == "__main__":
    main()
