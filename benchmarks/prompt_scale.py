"""Host memory against the number of prompts: streamed encodings on a tiny Sana pipeline folder.

For each prompt count (default 1,000 and 100,000) a fresh process builds the tiny Sana folder the
tests use (random weights, a 2-layer Gemma of width 32), writes that many distinct prompts, runs
``tbcm distill`` for 20 steps with a fresh text cache (so every prompt is encoded: encode
throughput), and reports its peak RSS. The two runs are printed side by side; the goal is the
large run's peak within 10% (or 100 MB) of the small one's.

    python benchmarks/prompt_scale.py [--counts 1000,100000] [--steps 20] [--write-doc]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["cat", "dog", "car", "house", "tree", "bird", "boat", "city", "sky", "sun", "red", "blue", "green", "small",
         "large", "old", "new", "bright", "dark", "river"]


def prompt_text(i: int) -> str:
    """A distinct prompt for every ``i`` (mixed-radix words), so no two share a cache entry."""
    words = []
    while True:
        words.append(WORDS[i % len(WORDS)])
        i //= len(WORDS)
        if i == 0:
            break
    return "a photo of a " + " ".join(words)


def child(count: int, steps: int, work: str, cache: str = "disk") -> dict:
    """One run (in its own process, so its peak RSS is its own)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from tbcm.cli import main
    from tests.models.families.tiny_diffusers import save_tiny_sana_pipeline

    torch.set_num_threads(1)
    work = Path(work)
    teacher = save_tiny_sana_pipeline(work / "sana", sprint_style=True)
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(prompt_text(i) for i in range(count)) + "\n")
    start = time.perf_counter()
    rc = main(["distill", "--out", str(work / "run"), "--no-progress", f"teacher={teacher}", f"prompts={prompts}",
               f"steps={steps}", "prompts_per_step=1", "pairs.route_points=4",
               f"text_cache={work / 'text' if cache == 'disk' else 'none'}",
               "sample.seeds=1", "sample.teacher_steps=2", "sample.student_steps=[1]", "threads=1",
               "checkpoint_every=100000"])
    wall = time.perf_counter() - start
    metrics = (work / "run" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    train_s = float(dict(zip(header, metrics[-1].split(",")))["seconds"])
    return {"prompts": count, "cache": cache, "rc": rc, "wall_s": wall, "train_s": train_s, "encode_s": wall - train_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,100000")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--in-memory", action="store_true", help="also the largest count with text_cache=none "
                    "(every encoding held in memory), for contrast")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), int(args.child[1]), args.child[2], args.child[3])))
        return
    rows = []
    counts = [int(c) for c in args.counts.split(",")]
    for count, cache in [*((c, "disk") for c in counts), *([(counts[-1], "none")] if args.in_memory else [])]:
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run([sys.executable, __file__, "--child", str(count), str(args.steps), work, cache],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    small = rows[0]
    lines = ["| prompts | encodings | encode (s, incl. start-up) | prompts/s | 20 training steps (s) | peak RSS (MB) "
             "| vs smallest |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        where = "streamed from the disk cache" if r["cache"] == "disk" else "all in memory (text_cache=none)"
        lines.append(f"| {r['prompts']:,} | {where} | {r['encode_s']:.0f} | {r['prompts'] / r['encode_s']:.0f} | "
                     f"{r['train_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - small['peak_rss_mb']:+.0f} MB "
                     f"({r['peak_rss_mb'] / small['peak_rss_mb']:.2f}x) |")
    lines += ["", f"`python benchmarks/prompt_scale.py --counts {args.counts} --steps {args.steps}`; tiny Sana-Sprint-style "
              f"folder (random weights, Gemma-2 of 2 layers, width 32), one CPU thread, fresh text cache; "
              f"{platform.machine()}, {datetime.date.today()}."]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        sys.path.insert(0, str(Path(__file__).parent))
        from results_doc import write_block

        write_block("prompt_scale", text, heading="## Prompt sets of any size: streamed encodings (host memory)")


if __name__ == "__main__":
    main()
