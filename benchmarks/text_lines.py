"""Text lines, side by side: our line recogniser (greedy and with its tuned LM) and Tesseract's LSTM line
recogniser (Debian tesseract-ocr with tesseract-ocr-eng, single-line mode --psm 7), on the same held-out lines
in one run: CER, WER, lines per second and our ratio to Tesseract.

    python benchmarks/text_lines.py --model exp/text_lines/best.pt --manifest data/text_lines/manifests/test.jsonl

Both read the same PNG files at their rendered resolution (our model scales them to its height). Tesseract runs
as one process over a list of the images (its start-up paid once) with OMP_THREAD_LIMIT=--threads; our model
runs on --threads torch threads, images loaded inside the timed part for both. Transcripts are compared
verbatim (case and punctuation count), after asr.text.verbatim_text on both sides; CER is also given per font
family (the manifest's speaker).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.audio import load_utterances  # noqa: E402
from asr.inference import DecodeRequest, Recognizer  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import score  # noqa: E402
from asr.text import verbatim_text  # noqa: E402


def ours(model: str, utts, use_lm: bool) -> tuple[list[str], float]:
    rec = Recognizer(model, "cpu", 32, DecodeRequest(use_tuned=use_lm))
    t0 = time.perf_counter()
    waves, failed = load_utterances(utts, rec.sample_rate)
    if failed:
        raise SystemExit(f"unreadable images: {failed}")
    texts = rec.transcribe(waves)
    return texts, time.perf_counter() - t0


def tesseract(utts, threads: int) -> tuple[list[str], float] | None:
    """Tesseract over all images in one process; its output pages are separated by form feeds."""
    if subprocess.run(["which", "tesseract"], capture_output=True).returncode != 0:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(f"{u.audio_filepath}\n" for u in utts))
        env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}
        t0 = time.perf_counter()
        run = subprocess.run(["tesseract", str(listing), "stdout", "--psm", "7", "-l", "eng"], capture_output=True,
                             text=True, env=env)
        seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"tesseract failed: {run.stderr[-500:]}")
    pages = run.stdout.split("\f")
    if len(pages) == len(utts) + 1 and not pages[-1].strip():
        pages = pages[:-1]
    if len(pages) != len(utts):
        raise SystemExit(f"tesseract returned {len(pages)} pages for {len(utts)} images")
    return [verbatim_text(p) for p in pages], seconds


def version() -> str:
    run = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
    return (run.stdout or run.stderr).splitlines()[0] if run.returncode == 0 else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=0, help="first N lines only")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    utts = read_manifest(args.manifest)[: args.limit or None]
    refs = [verbatim_text(u.text) for u in utts]
    rows = []
    for name, use_lm in (("ours greedy", False), ("ours + LM", True)):
        texts, seconds = ours(args.model, utts, use_lm)
        rows.append((name, score(refs, texts), len(utts) / seconds, texts))
    tess = tesseract(utts, args.threads)
    if tess is not None:
        rows.append((f"tesseract --psm 7 ({version()})", score(refs, tess[0]), len(utts) / tess[1], tess[0]))
    print(f"{len(utts)} lines of {args.manifest}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'system':<36} {'CER %':>7} {'WER %':>7} {'lines/s':>8}")
    for name, s, speed, _ in rows:
        print(f"{name:<36} {100 * s['cer']:>7.2f} {100 * s['wer']:>7.2f} {speed:>8.1f}")
    families = sorted({u.speaker or "?" for u in utts})
    print("CER % by font family: " + ", ".join(families))
    for name, _, _, texts in rows:
        per = []
        for family in families:
            idx = [i for i, u in enumerate(utts) if (u.speaker or "?") == family]
            per.append(100 * score([refs[i] for i in idx], [texts[i] for i in idx])["cer"])
        print(f"{name:<36} " + " ".join(f"{c:>7.2f}" for c in per))
    if tess is not None:
        ref = rows[-1]
        for name, s, speed, _ in rows[:-1]:
            print(f"{name} vs tesseract: CER x{s['cer'] / max(ref[1]['cer'], 1e-9):.2f}, "
                  f"WER x{s['wer'] / max(ref[1]['wer'], 1e-9):.2f}, speed x{speed / ref[2]:.2f}")
    else:
        print("tesseract not installed (apt-get install tesseract-ocr tesseract-ocr-eng): no reference")


if __name__ == "__main__":
    main()
