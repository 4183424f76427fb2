"""Training step speed: our CPU GRU (asr.gru) against nn.GRU, bf16 autocast against float32, same run.

    python benchmarks/training_step.py [--recipe recipes/synthetic_en] [key=value ...] [--device cpu|cuda]
        [--batch 32] [--seconds 5] [--repeats 5] [--bf16] [--compare key=value,key=value] [--vary]

Times one full DeepSpeech2 training step (features, forward, CTC loss, backward, AdamW) on a batch of
random waveforms with the model and features of the recipe's config (size=large etc. as overrides),
median of --repeats after two warm-up steps, and prints milliseconds per step, audio seconds per second
and the speed-ups of asr.gru over nn.GRU and of bf16 over float32 (on CUDA both rows use nn.GRU/cuDNN).
On a CPU bf16 pays only where oneDNN has bf16 kernels (AVX-512 or newer); the script says which.
It runs under tcmalloc where installed, as the `asr` command does (benchmarks/allocator.py compares).
--compare times a second config (the recipe's with those overrides) against the first, their steps interleaved in
one process (asr.gru, each precision): a host whose speed drifts between runs cannot bias the ratio.
--vary times one fixed batch against batches whose lengths change every step, as in training (seeded, 80-120% of
--seconds), interleaved: what shapes met for the first time cost (oneDNN builds a kernel for each new bf16 shape).

Roofline: the step's matmul and convolution FLOPs (forward and backward, counted by torch's FlopCounterMode)
over its time, against the machine's measured matmul peak (a large float32 or bf16 GEMM on all threads):
how far from the hardware's limit each row is. An AVX2 CPU is emulated on any host with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 NUMBA_CPU_NAME=haswell` (float32
rows only; without the MKL variable an Intel host's GEMMs keep their AVX-512 code: peak 360 against 231 GFLOP/s).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.allocator import current, reexec_under_tcmalloc  # noqa: E402

reexec_under_tcmalloc()  # time what the `asr` command runs under (benchmarks/allocator.py compares the two)
import torch  # noqa: E402

from asr.recipe import recipe_config  # noqa: E402
from asr.step_timing import Stepper, step_times  # noqa: E402
from asr.training import cpu_has_bf16_kernels  # noqa: E402


def step_flops(cfg, device: torch.device, batch: int, seconds: float) -> float:
    """Matmul and convolution FLOPs of one training step (forward and backward) on the benchmark's batch."""
    from torch.utils.flop_counter import FlopCounterMode

    step = Stepper(cfg, device, None, False)  # nn.GRU: the counter sees its matmuls (the same FLOPs as asr.gru's)
    data = step.spread(batch, seconds)
    with FlopCounterMode(display=False) as counter:
        step(*data)
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square GEMM in `dtype`: the roofline's compute ceiling for this machine and thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(cfg, other, device: torch.device, dtype: torch.dtype | None, batch: int, seconds: float,
            repeats: int) -> tuple[float, float]:
    """Median step seconds of `cfg` and `other` (asr.gru), their steps interleaved after two warm-ups each."""
    steppers = [Stepper(c, device, dtype, True) for c in (cfg, other)]
    data = steppers[0].spread(batch, seconds)
    times: list[list[float]] = [[], []]
    for _ in range(repeats + 2):
        for stepper, t in zip(steppers, times):
            t.append(stepper(*data))
    return statistics.median(times[0][2:]), statistics.median(times[1][2:])


def vary(cfg, device: torch.device, dtype: torch.dtype | None, batch: int, seconds: float,
         repeats: int) -> tuple[float, float]:
    """Median audio-s/s of the asr.gru step on one fixed batch and on a batch of new lengths every step."""
    step = Stepper(cfg, device, dtype, True)
    rng = random.Random(0)

    def timed(longest: float) -> float:
        data = step.spread(batch, longest)
        return batch * 0.8 * longest / step(*data)

    for _ in range(2):  # warm-up
        timed(seconds)
    fixed, varied = [], []
    for _ in range(repeats):
        fixed.append(timed(seconds))
        varied.append(timed(seconds * rng.uniform(0.8, 1.2)))
    return statistics.median(fixed), statistics.median(varied)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes/synthetic_en"))
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. size=large model.rnn_hidden=512")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0, help="longest utterance; the batch spans 60-100%% of it")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="time bf16 autocast even on a CPU without bf16 kernels")
    ap.add_argument("--compare", help="overrides of a second config, comma-separated: its steps interleaved with ours")
    ap.add_argument("--vary", action="store_true", help="one fixed batch against new lengths every step")
    args = ap.parse_args()
    cfg = recipe_config(args.recipe, args.overrides)
    device = torch.device(args.device)
    if device.type == "cpu":
        print(f"CPU threads {torch.get_num_threads()}, oneDNN bf16 kernels: {cpu_has_bf16_kernels()}, "
              f"allocator {current()}")
    audio = args.batch * args.seconds * 0.8
    grus = [True, False] if device.type == "cpu" and cfg.model.rnn_type == "gru" else [False]
    precisions = [("bf16 autocast", torch.bfloat16), ("float32", None)]
    if device.type == "cpu" and not cpu_has_bf16_kernels() and not args.bf16:
        print("bf16 rows left out: without oneDNN bf16 kernels a bf16 step is ~27x slower (--bf16 runs them anyway)")
        precisions = precisions[1:]
    if args.compare:
        other = recipe_config(args.recipe, args.overrides + args.compare.split(","))
        for precision, dtype in precisions:
            ours, theirs = compare(cfg, other, device, dtype, args.batch, args.seconds, args.repeats)
            print(f"{precision}: {ours * 1000:.1f} ms/step, with {args.compare} {theirs * 1000:.1f}: "
                  f"ours {theirs / ours:.2f}x as fast")
        return
    if args.vary:
        for precision, dtype in precisions:
            fixed, varied = vary(cfg, device, dtype, args.batch, args.seconds, args.repeats)
            print(f"{precision}: {fixed:.1f} audio-s/s on one batch, {varied:.1f} on new lengths every step "
                  f"({fixed / varied:.2f}x slower)")
        return
    results = {}
    flops = step_flops(cfg, device, args.batch, args.seconds) if device.type == "cpu" else None
    peaks = {name: matmul_peak(dtype or torch.float32) for name, dtype in precisions} if flops else {}
    if flops:
        print(f"step FLOPs (matmuls and convolutions, forward + backward): {flops / 1e9:.1f} G; matmul peak "
              + ", ".join(f"{name} {peak / 1e9:.0f} GFLOP/s" for name, peak in peaks.items()))
    for precision, dtype in precisions:
        for own in grus:
            name = f"{precision}, {'asr.gru' if own else 'nn.GRU'}"
            times = step_times(cfg, device, dtype, own, args.batch, args.seconds, args.repeats)
            results[precision, own] = ms = statistics.median(times) * 1000
            roof = (f"  {flops / ms / 1e6:6.1f} GFLOP/s = {100 * flops / ms * 1000 / peaks[precision]:4.1f}% of peak"
                    if flops else "")
            print(f"{name:24s} {ms:8.1f} ms/step  {audio / ms * 1000:7.1f} audio-s/s{roof}")
    if len(grus) == 2:
        for precision, _ in precisions:
            print(f"asr.gru speed-up over nn.GRU, {precision}: "
                  f"{results[precision, False] / results[precision, True]:.2f}x")
    for own in grus if len(precisions) == 2 else []:
        print(f"bf16 speed-up over float32 ({'asr.gru' if own else 'nn.GRU'}): "
              f"{results['float32', own] / results['bf16 autocast', own]:.2f}x")


if __name__ == "__main__":
    main()
