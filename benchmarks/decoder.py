"""Decoder accuracy and speed: greedy, our prefix beam search + KenLM, pyctcdecode (and torchaudio's
Flashlight decoder when installed), on the same cached log-probs, the same LM and parameters, in one run.

    python benchmarks/decoder.py --model exp/synthetic_en/best.pt \
        --manifest data/synthetic_en/manifests/test.jsonl --lm exp/synthetic_en/lm/4gram.arpa \
        [--alpha A --beta B] [--beam 100] [--limit N]

    python benchmarks/decoder.py --controlled [--oov]    # log-probs whose truth is known (asr.controlled_logits)

alpha/beta default to the values `asr lm tune` wrote beside the model (1.0 / 0.5 with --controlled). Times are
single-process milliseconds per utterance (median of --repeats passes); the acoustic model's time is not included.
Each wrong transcript is sorted into a search error (the truth scores higher under the shared objective, exact CTC
log-prob + alpha LM + beta per word) or a scoring error (no search could have found the truth).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr.controlled_logits import LABELS, controlled_logits, error_kinds, write_bigram_lm  # noqa: E402
from asr.decoding import CTCBeamDecoder, DecodingOptions  # noqa: E402
from asr.inference import tuned_decoding  # noqa: E402
from asr.lm import arpa_unigrams  # noqa: E402
from asr.lm_tune import cached_log_probs  # noqa: E402
from asr.metrics import word_errors  # noqa: E402


def timed(fn, items, repeats: int) -> tuple[list[str], float]:
    times, hyps = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hyps = [fn(x) for x in items]
        times.append((time.perf_counter() - t0) / len(items) * 1000)
    return hyps, statistics.median(times)


def pyctcdecode_decoder(labels: list[str], lm: str, alpha: float, beta: float, unk_offset: float):
    import pyctcdecode

    words = Path(lm).with_suffix(".unigrams.txt")
    unigrams = words.read_text().split() if words.exists() else arpa_unigrams(lm)
    return pyctcdecode.build_ctcdecoder([""] + labels[1:], kenlm_model_path=lm, unigrams=unigrams, alpha=alpha,
                                        beta=beta, unk_score_offset=unk_offset)


UNK_OFFSET = DecodingOptions.unk_offset  # our default unknown-word penalty, given to pyctcdecode too


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="exp/synthetic_en/best.pt")
    ap.add_argument("--manifest", default="data/synthetic_en/manifests/test.jsonl")
    ap.add_argument("--lm", default="exp/synthetic_en/lm/4gram.arpa")
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--beta", type=float)
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--token-min-logp", type=float, default=-5.0, help="pyctcdecode's default")
    ap.add_argument("--beam-prune-logp", type=float, default=-10.0, help="pyctcdecode's default")
    ap.add_argument("--limit", type=int, help="first N utterances only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--controlled", action="store_true", help="known-truth log-probs instead of a model's")
    ap.add_argument("--oov", action="store_true", help="with --controlled: 'hallo' outside the LM")
    ap.add_argument("--seed", type=int, default=1, help="with --controlled")
    return ap.parse_args()


def load_inputs(args: argparse.Namespace) -> tuple[list[np.ndarray], list[str], list[str], int]:
    """The log-probs to decode, their reference transcripts, the labels and the blank's index. With --controlled
    also points args.lm at the bigram LM written for them and fills in their alpha and beta; otherwise the values
    `asr lm tune` wrote beside the model, where the command line leaves them out."""
    if args.controlled:
        args.lm = str(write_bigram_lm(Path(tempfile.mkdtemp()) / "bigram.arpa", drop=("hallo",) if args.oov else ()))
        items, refs = controlled_logits(args.limit or 300, seed=args.seed)
        labels, blank, tuned = LABELS, 0, {"alpha": 1.0, "beta": 0.5}
    else:
        tuned = tuned_decoding(args.model) or {}
        log_probs, refs, info = cached_log_probs(args.model, args.manifest)
        items = [lp.numpy().astype(np.float32) for lp in log_probs][: args.limit]
        refs, labels, blank = refs[: args.limit], info["labels"], info["blank"]
    args.alpha = args.alpha if args.alpha is not None else tuned.get("alpha", 0.5)
    args.beta = args.beta if args.beta is not None else tuned.get("beta", 1.0)
    return items, refs, labels, blank


def compare(args: argparse.Namespace, items: list[np.ndarray], refs: list[str], labels: list[str],
            blank: int) -> tuple[list[tuple[str, float, float]], tuple[float, float] | None, dict]:
    """(decoder, WER, ms per utterance) for greedy, ours with and without the LM and pyctcdecode (when installed);
    how often ours agrees with pyctcdecode's two searches; and each one's search and scoring errors."""
    prune = dict(token_min_logp=args.token_min_logp, beam_prune_logp=args.beam_prune_logp)
    rows = []
    hyps, ms = timed(CTCBeamDecoder(labels, blank, beam_width=1).decode, items, args.repeats)
    rows.append(("greedy", word_errors(refs, hyps).rate, ms))
    ours = CTCBeamDecoder(labels, blank, args.lm, alpha=args.alpha, beta=args.beta, beam_width=args.beam,
                          unk_offset=UNK_OFFSET, **prune)
    ours.decode(items[0])  # warm-up: LM loading and caches are not timed for either decoder
    hyps_ours, ms = timed(ours.decode, items, args.repeats)
    rows.append(("ours (beam+LM)", word_errors(refs, hyps_ours).rate, ms))
    hyps, ms = timed(CTCBeamDecoder(labels, blank, beam_width=args.beam, **prune).decode, items, args.repeats)
    rows.append(("ours (beam, no LM)", word_errors(refs, hyps).rate, ms))
    try:
        ref_dec = pyctcdecode_decoder(labels, args.lm, args.alpha, args.beta, UNK_OFFSET)
    except ImportError:
        print("pyctcdecode is not installed (pip install --no-deps pyctcdecode pygtrie): skipped")
        return rows, None, {}
    kw = dict(beam_width=args.beam, **prune)
    ref_dec.decode(items[0], **kw)
    hyps_ref, ms = timed(lambda x: ref_dec.decode(x, **kw), items, args.repeats)
    rows.append(("pyctcdecode decode()", word_errors(refs, hyps_ref).rate, ms))
    hyps_full, ms = timed(lambda x: ref_dec.decode_beams(x, **kw)[0][0], items, args.repeats)
    rows.append(("pyctcdecode decode_beams", word_errors(refs, hyps_full).rate, ms))
    agree = (sum(a == b for a, b in zip(hyps_ours, hyps_full)) / len(items),
             sum(a == b for a, b in zip(hyps_ours, hyps_ref)) / len(items))
    kinds = {"ours (beam+LM)": hyps_ours, "pyctcdecode decode_beams": hyps_full, "pyctcdecode decode()": hyps_ref}
    try:  # every decoder's transcripts judged by the one objective (pyctcdecode's combined score is the same)
        return rows, agree, {name: error_kinds(ours, items, refs, hyps) for name, hyps in kinds.items()}
    except ValueError as e:
        print(f"search/scoring errors not counted: {e}")
        return rows, agree, {}


def report(rows: list[tuple[str, float, float]], agree: tuple[float, float] | None, kinds: dict) -> None:
    base = dict((name, ms) for name, _, ms in rows).get("pyctcdecode decode()")
    print(f"\n{'decoder':<24} {'WER %':>7} {'ms/utt':>9} {'speed vs pyctcdecode':>21}")
    for name, wer, ms in rows:
        ratio = f"{base / ms:.1f}x" if base else "-"
        print(f"{name:<24} {100 * wer:>7.2f} {ms:>9.2f} {ratio:>21}")
    if agree is not None:
        print(f"\nsame transcript as pyctcdecode: {100 * agree[0]:.1f}% of utterances against its plain beam search "
              f"(decode_beams), {100 * agree[1]:.1f}% against decode() (which also prunes beams by LM history)")
    for name, k in kinds.items():
        print(f"{name:<24} wrong {k.sentences - k.correct:>4} of {k.sentences}: {k.search_errors:>4} search errors "
              f"(the truth scores higher), {k.scoring_errors:>4} scoring errors")
    greedy_wer, lm_wer = rows[0][1], rows[1][1]
    if greedy_wer > 0:
        print(f"LM fusion cuts WER by {100 * (greedy_wer - lm_wer) / greedy_wer:.1f}% relative to greedy")


def main() -> None:
    args = parse_args()
    items, refs, labels, blank = load_inputs(args)
    print(f"{len(items)} utterances, {sum(len(x) for x in items)} frames; LM {args.lm}; alpha {args.alpha}, "
          f"beta {args.beta}, beam {args.beam}, token_min_logp {args.token_min_logp}, "
          f"beam_prune_logp {args.beam_prune_logp}")
    try:
        from torchaudio.models.decoder import ctc_decoder  # noqa: F401

        print("torchaudio's Flashlight decoder is installed but needs a lexicon; not compared in this version")
    except ImportError:
        pass
    rows, agree, kinds = compare(args, items, refs, labels, blank)
    report(rows, agree, kinds)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [dict(decoder=n, wer=w, ms_per_utt=m) for n, w, m in rows],
                                               "agreement": agree, "error_kinds": {n: vars(k) for n, k in kinds.items()},
                                               "alpha": args.alpha, "beta": args.beta, "beam": args.beam,
                                               "utterances": len(items)}, indent=2))
    assert all(math.isfinite(r[1]) for r in rows)


if __name__ == "__main__":
    main()
