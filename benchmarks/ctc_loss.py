"""CTC loss speed and memory: ours (asr.ctc) against torch.nn.functional.ctc_loss, same inputs, same run.

    python benchmarks/ctc_loss.py [--device cpu|cuda] [--repeats 5]
    NUMBA_CPU_NAME=haswell ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/ctc_loss.py  # an AVX2 CPU

Times forward+backward (median of --repeats after a warm-up) at four shapes (character and BPE-sized
vocabularies, short and long utterances) and reports the extra peak memory of each (peak resident set above the inputs on CPU, Linux only; allocator peak on CUDA), measured in a fresh
subprocess per implementation and shape.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from asr.ctc import ctc_loss  # noqa: E402

SHAPES = [(32, 400, 29, 80), (32, 800, 29, 150), (16, 200, 1000, 40), (64, 150, 29, 30)]  # N, T, C, S


def inputs(n: int, t: int, c: int, s: int, device: str):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(t, n, c, generator=g).to(device)
    targets = torch.randint(1, c, (n, s), generator=g).to(device)
    in_lens = torch.randint(int(0.8 * t), t + 1, (n,), generator=g)
    in_lens[0] = t
    tgt_lens = torch.randint(int(0.8 * s), s + 1, (n,), generator=g)
    return logits.log_softmax(-1).detach(), targets, in_lens.to(device), tgt_lens.to(device)


def run_once(impl: str, lp, targets, in_lens, tgt_lens) -> None:
    x = lp.clone().requires_grad_(True)
    fn = ctc_loss if impl == "ours" else F.ctc_loss
    fn(x, targets, in_lens, tgt_lens, reduction="mean").backward()
    if x.is_cuda:
        torch.cuda.synchronize()


def time_impl(impl: str, shape, device: str, repeats: int) -> float:
    args = inputs(*shape, device)
    run_once(impl, *args)  # warm-up (and numba compilation or cache load)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_once(impl, *args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_child(impl: str, shape, device: str) -> None:
    run_once(impl, *inputs(2, 8, shape[2], 2, device))  # compile/initialise on a tiny input, outside the measurement
    args = inputs(*shape, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(impl, *args)
        print(json.dumps({"mb": (torch.cuda.max_memory_allocated() - base) / 2**20}))
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (Linux)
        before = _rss_kb("VmRSS")
        run_once(impl, *args)
        print(json.dumps({"mb": (_rss_kb("VmHWM") - before) / 1024}))


def peak_memory(impl: str, shape, device: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", impl, ",".join(map(str, shape)), "--device", device],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_memory_child(args.child[0], tuple(int(x) for x in args.child[1].split(",")), args.device)
        return
    isa = {k: os.environ[k] for k in ("NUMBA_CPU_NAME", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                      "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    print(f"CTC loss forward+backward, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}, "
          f"torch's CPU kernels {torch.backends.cpu.get_cpu_capability()}{', ' + str(isa) if isa else ''}")
    header = f"{'N':>4} {'T':>5} {'C':>5} {'S':>4} | {'ours ms':>9} {'torch ms':>9} {'speed-up':>9}"
    if not args.no_memory:
        header += f" | {'ours MB':>8} {'torch MB':>8}"
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        ours = time_impl("ours", shape, args.device, args.repeats)
        ref = time_impl("torch", shape, args.device, args.repeats)
        line = f"{shape[0]:>4} {shape[1]:>5} {shape[2]:>5} {shape[3]:>4} | {1000 * ours:>9.1f} {1000 * ref:>9.1f} {ref / ours:>8.2f}x"
        if not args.no_memory:
            line += f" | {peak_memory('ours', shape, args.device):>8.1f} {peak_memory('torch', shape, args.device):>8.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
