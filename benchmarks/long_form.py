"""Pauses and long recordings: WER of one model on a test set as it is, with pauses around each utterance, and
joined into long files that `asr transcribe` cuts at pauses, in one run.

    python benchmarks/long_form.py --model exp/synthetic_en/best.pt \
        --manifest data/synthetic_en/manifests/test.jsonl [--per-file 10] [--max-segment-seconds 20]

The pauses are 0-1 s of quiet noise (-75 to -50 dBFS) before and after each utterance; the long files join
--per-file consecutive utterances with 0.2-1.0 s pauses under a -60 dBFS noise floor. All seeded. Greedy
decoding, so the figures measure the acoustic model and the segmentation, not the LM.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.audio import load_audio  # noqa: E402
from asr.augment import pad_with_silence  # noqa: E402
from asr.inference import DecodeRequest, Recognizer  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import word_errors  # noqa: E402
from asr.text import normalize_text  # noqa: E402
from asr.transcribe import transcribe_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="exp/synthetic_en/best.pt")
    ap.add_argument("--manifest", default="data/synthetic_en/manifests/test.jsonl")
    ap.add_argument("--per-file", type=int, default=10, help="utterances joined into one long file")
    ap.add_argument("--max-segment-seconds", type=float, default=20.0)
    args = ap.parse_args()

    rec = Recognizer(args.model, request=DecodeRequest(use_tuned=False))
    rate = rec.sample_rate
    utts = read_manifest(args.manifest)
    waves = [load_audio(u.audio_filepath, rate, u.offset, u.duration if u.offset else None) for u in utts]
    refs = [normalize_text(u.text) for u in utts]
    rows = [("as they are", word_errors(refs, rec.transcribe(waves)).rate)]
    padded = [pad_with_silence(w, rate, 1.0, random.Random(f"pauses:{i}")) for i, w in enumerate(waves)]
    rows.append(("0-1 s pauses around each", word_errors(refs, rec.transcribe(padded)).rate))

    with tempfile.TemporaryDirectory() as tmp:
        paths, long_refs, seconds = [], [], 0.0
        for g in range(0, len(waves), args.per_file):
            rng, parts = random.Random(f"long:{g}"), []
            for w in waves[g: g + args.per_file]:
                parts += [w, np.zeros(int(rng.uniform(0.2, 1.0) * rate), np.float32)]
            x = np.concatenate(parts)
            x += np.random.default_rng(g).standard_normal(len(x)).astype(np.float32) * 10 ** (-60 / 20)
            paths.append(Path(tmp) / f"{g}.wav")
            sf.write(str(paths[-1]), x, rate)
            long_refs.append(" ".join(refs[g: g + args.per_file]))
            seconds += len(x) / rate
        out = transcribe_files(rec, paths, args.max_segment_seconds)
    pieces = sum(len(o["segments"]) for o in out)
    rows.append((f"{len(paths)} files of {args.per_file} ({seconds / len(paths):.1f} s), {pieces} pieces",
                 word_errors(long_refs, [o["text"] for o in out]).rate))

    print(f"{len(utts)} utterances, {args.model}, greedy\n")
    print(f"{'test audio':<44} {'WER %':>7} {'vs as they are':>15}")
    for name, wer in rows:
        print(f"{name:<44} {100 * wer:>7.2f} {wer / rows[0][1] if rows[0][1] else float('nan'):>14.2f}x")


if __name__ == "__main__":
    main()
