"""What every entry point shares: the common options and the command line the manifest records."""

from __future__ import annotations

import argparse
from pathlib import Path

from .store import ROOT, Store

DEFAULT_RUNS = ROOT / "runs" / "bench"  # run folders (ignored by git: /runs/)


def add_common(ap: argparse.ArgumentParser, runs: bool = True) -> None:
    ap.add_argument("--store", default=None,
                    help="the results store folder (default benchmarks/results/; with --smoke, RUNS/smoke_store)")
    if runs:
        ap.add_argument("--runs", default=str(DEFAULT_RUNS), help="where run folders go (default runs/bench/)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--eval-device", default="cpu",
                    help="where the scoring samples: cpu (default), cuda or auto (training follows the suite's "
                         "device key)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides on top of the pinned suite (recorded in the manifest; they name the row)")
    ap.add_argument("--smoke", action="store_true", help="a tiny budget, to check the pipeline end to end")


# a tiny budget of every entry point's --smoke: a few steps, small grids, a small pool
SMOKE = ["steps=6", "log_every=2", "preview.seeds=1", "prompts_per_step=2", "pairs.pool_prompts=4"]


def start(args, script: str, argv: list[str]) -> tuple[Store, list[str], str, list[str]]:
    """What an entry point's ``main`` begins with: torch's threads set, and ``(store, the command
    line for the manifest, the row's name, the config overrides with --smoke's budget first)``."""
    import torch

    torch.set_num_threads(args.threads)
    if getattr(args, "eval_device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        # before any training: the scoring would fail only after it
        raise SystemExit(f"--eval-device {args.eval_device} but torch sees no CUDA device: pass --eval-device cpu "
                         "(or auto)")
    name = (getattr(args, "name", None) or label(args.suite, args.overrides)) + (" (smoke)" if args.smoke else "")
    return store_of(args), command(script, argv), name, [*(SMOKE if args.smoke else []), *args.overrides]


def store_of(args) -> Store:
    if args.store:
        return Store(args.store)
    if args.smoke:  # smoke records never land in the real store
        return Store(Path(getattr(args, "runs", DEFAULT_RUNS)) / "smoke_store")
    return Store()


def label(suite: str, overrides) -> str:
    """A row's name: the suite, and its overrides if any."""
    name = Path(suite).stem
    return name if not overrides else f"{name} + {' '.join(sorted(overrides))}"


def command(script: str, argv: list[str]) -> list[str]:
    return ["python", f"benchmarks/{script}", *argv]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]
