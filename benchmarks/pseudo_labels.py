"""Pseudo-labels against the truth: how many clips the teachers' agreement keeps, and how wrong the kept
transcripts are, measured on clips whose real transcripts we have (the games' dev characters by default).

    python benchmarks/pseudo_labels.py [--manifest data/synthetic_en/manifests/people_dev.jsonl] [--limit 150]
        [--teachers whisper-base,whisper-tiny.en] [--threads 2]

Every teacher transcribes every clip once (asr.pseudo_label.Teacher); then, for a grid of agreement
(--max-disagreement) and confidence (--min-logprob) thresholds, the share of clips kept and the word error rate
of the kept pseudo-labels against the clips' own transcripts, beside each teacher's WER on all clips.
Needs `pip install 'asr[teachers]'`.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.audio import load_utterances  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.metrics import word_errors  # noqa: E402
from asr.pseudo_label import SAMPLE_RATE, PseudoLabelOptions, Teacher, verdict  # noqa: E402

DATA = "data/synthetic_en/manifests"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", action="append", help=f"clips with real transcripts (default {DATA}/people_dev.jsonl "
                                                        f"and sky_dev.jsonl)")
    ap.add_argument("--limit", type=int, default=150, help="random clips per manifest (seed 0; 0: all)")
    ap.add_argument("--teachers", default="whisper-base,whisper-tiny.en")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    utts = []
    for manifest in args.manifest or [f"{DATA}/people_dev.jsonl", f"{DATA}/sky_dev.jsonl"]:
        rows = read_manifest(manifest)
        random.Random(0).shuffle(rows)
        utts += rows[: args.limit or None]
    names = tuple(args.teachers.split(","))
    teachers = [Teacher(n, args.threads) for n in names]
    waves, failures = load_utterances(utts, SAMPLE_RATE)
    kept_utts = [(u, w) for u, w in zip(utts, waves) if w is not None]
    t0 = time.perf_counter()
    heard = [[t.hear(w) for t in teachers] for _, w in kept_utts]
    seconds = sum(len(w) for _, w in kept_utts) / SAMPLE_RATE
    print(f"{len(kept_utts)} clips ({seconds / 60:.1f} min; {len(failures)} unreadable), teachers "
          f"{', '.join(names)}: {time.perf_counter() - t0:.0f} s")
    refs = [u.text for u, _ in kept_utts]
    for k, name in enumerate(names):
        print(f"{name} alone: WER {100 * word_errors(refs, [h[k].text for h in heard]).rate:.1f}%")
    print(f"{'max disagreement':>16} {'min log-prob':>12} {'kept':>10} {'WER of kept %':>14}")
    for md in (0.0, 0.1, 0.2, 0.34):
        for lp in (-0.3, -0.5, -0.8, -1.5):
            opts = PseudoLabelOptions(teachers=names, max_disagreement=md, min_logprob=lp)
            sel = [(r, h[0].text) for r, h in zip(refs, heard) if verdict(h, opts) is None]
            wer = word_errors([r for r, _ in sel], [t for _, t in sel]).rate if sel else float("nan")
            print(f"{md:>16g} {lp:>12g} {f'{len(sel)}/{len(refs)}':>10} {100 * wer:>14.1f}")


if __name__ == "__main__":
    main()
