"""Training under tcmalloc against glibc's malloc, same run: steps on batches whose shape changes every step.

    python benchmarks/allocator.py [--recipe recipes/synthetic_en] [key=value ...] [--steps 300] [--batch 32]

Runs the same training steps (the recipe's model and features, bf16 autocast where oneDNN has bf16
kernels as with train.amp=auto, asr.gru, AdamW, random waveforms: each batch's longest 1-6 s, the rest
80-100% of it, so a new shape at every step as in bucketed training) in two child processes, one under
glibc malloc (ASR_ALLOCATOR=system) and one under tcmalloc as `asr` runs, and prints audio-s/s over all
steps and over the first and last fifth, peak memory, and the speed-up. Needs tcmalloc installed
(Debian: libtcmalloc-minimal4).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # training_step.Stepper
from asr.allocator import current, find_tcmalloc, reexec_under_tcmalloc  # noqa: E402


def child(args: argparse.Namespace) -> None:
    reexec_under_tcmalloc()  # a no-op under ASR_ALLOCATOR=system
    import torch

    from asr.recipe import recipe_config
    from asr.training import cpu_has_bf16_kernels
    from training_step import Stepper

    cfg = recipe_config(args.recipe, args.overrides)
    bf16 = cpu_has_bf16_kernels()
    step = Stepper(cfg, torch.device("cpu"), torch.bfloat16 if bf16 else None, own_gru=True)
    rng = random.Random(0)
    times, audio = [], []
    for _ in range(args.steps):
        longest = rng.uniform(1.0, 6.0) * step.sr
        lengths = torch.tensor([int(longest * rng.uniform(0.8, 1.0)) for _ in range(args.batch - 1)] + [int(longest)])
        times.append(step(*step.batch(lengths)))
        audio.append(float(lengths.sum()) / step.sr)
    fifth = max(1, args.steps // 5)
    print(json.dumps({"allocator": current(), "bf16": bf16, "all": sum(audio) / sum(times),
                      "first": sum(audio[:fifth]) / sum(times[:fifth]), "last": sum(audio[-fifth:]) / sum(times[-fifth:]),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes/synthetic_en"))
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.rnn_hidden=512")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if find_tcmalloc() is None:
        sys.exit("tcmalloc is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)")
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASR_ALLOCATOR", "ASR_ALLOCATOR_REEXEC")}
    cmd = [sys.executable, __file__, "--child", "--recipe", args.recipe, "--steps", str(args.steps),
           "--batch", str(args.batch), *args.overrides]
    results = {}
    for name, env in (("glibc", {"ASR_ALLOCATOR": "system"}), ("tcmalloc", {})):
        out = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, check=True).stdout
        r = results[name] = json.loads(out.strip().splitlines()[-1])
        assert r["allocator"] == name, r
        print(f"{name:9s} {r['all']:6.1f} audio-s/s (first fifth {r['first']:6.1f}, last fifth {r['last']:6.1f}), "
              f"peak memory {r['peak_mb']:6.0f} MB{'  [bf16 autocast]' if r['bf16'] else ''}")
    g, t = results["glibc"], results["tcmalloc"]
    print(f"tcmalloc speed-up over glibc malloc: {t['all'] / g['all']:.2f}x over {args.steps} steps, "
          f"{t['last'] / g['last']:.2f}x over the last fifth")


if __name__ == "__main__":
    main()
