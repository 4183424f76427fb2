"""Decoder accuracy and speed: greedy, our prefix beam search + KenLM, pyctcdecode (and torchaudio's
Flashlight decoder when installed), on the same cached log-probs, the same LM and parameters, in one run.

    python benchmarks/decoder.py --model exp/synthetic_en/best.pt \
        --manifest data/synthetic_en/manifests/test.jsonl --lm exp/synthetic_en/lm/4gram.arpa \
        [--alpha A --beta B] [--beam 100] [--limit N]

alpha/beta default to the values `asr lm tune` wrote beside the model. Times are single-process
milliseconds per utterance (median of --repeats passes); the acoustic model's time is not included.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr import beam_kernel  # noqa: E402
from asr.decoding import CTCBeamDecoder  # noqa: E402
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


def fused_score(dec: CTCBeamDecoder, lp: np.ndarray, text: str) -> float | None:
    """The search's objective for one transcript: exact CTC log-prob of its characters + alpha LM + beta words."""
    index = {c: i for i, c in enumerate(dec.labels)}
    if any(c not in index for c in text):
        return None
    acoustic = float(beam_kernel.labeling_logp(lp.astype(np.float64), np.asarray([index[c] for c in text]), dec.blank))
    state, lm = dec.lm.start(), 0.0
    for word in text.split():
        score, state = dec.lm.score_word(state, word)
        lm += score
    return acoustic + lm + dec.lm.score_end(state)


def pyctcdecode_decoder(labels: list[str], lm: str, alpha: float, beta: float, unk_offset: float):
    import pyctcdecode

    words = Path(lm).with_suffix(".unigrams.txt")
    unigrams = words.read_text().split() if words.exists() else arpa_unigrams(lm)
    return pyctcdecode.build_ctcdecoder([""] + labels[1:], kenlm_model_path=lm, unigrams=unigrams, alpha=alpha,
                                        beta=beta, unk_score_offset=unk_offset)


def main() -> None:
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
    args = ap.parse_args()

    tuned = tuned_decoding(args.model) or {}
    alpha = args.alpha if args.alpha is not None else tuned.get("alpha", 0.5)
    beta = args.beta if args.beta is not None else tuned.get("beta", 1.0)
    log_probs, refs, info = cached_log_probs(args.model, args.manifest)
    items = [lp.numpy().astype(np.float32) for lp in log_probs][: args.limit]
    refs = refs[: args.limit]
    labels, unk = info["labels"], -10.0
    print(f"{len(items)} utterances, {sum(len(x) for x in items)} frames; LM {args.lm}; alpha {alpha}, beta {beta}, "
          f"beam {args.beam}, token_min_logp {args.token_min_logp}, beam_prune_logp {args.beam_prune_logp}")

    rows = []
    greedy = CTCBeamDecoder(labels, info["blank"], beam_width=1)
    hyps, ms = timed(greedy.decode, items, args.repeats)
    rows.append(("greedy", word_errors(refs, hyps).rate, ms))
    ours = CTCBeamDecoder(labels, info["blank"], args.lm, alpha, beta, beam_width=args.beam,
                          token_min_logp=args.token_min_logp, beam_prune_logp=args.beam_prune_logp, unk_offset=unk)
    ours.decode(items[0])  # warm-up: LM loading and caches are not timed for either decoder
    hyps_ours, ms = timed(ours.decode, items, args.repeats)
    rows.append(("ours (beam+LM)", word_errors(refs, hyps_ours).rate, ms))
    ours_nolm = CTCBeamDecoder(labels, info["blank"], beam_width=args.beam, token_min_logp=args.token_min_logp,
                               beam_prune_logp=args.beam_prune_logp)
    hyps, ms = timed(ours_nolm.decode, items, args.repeats)
    rows.append(("ours (beam, no LM)", word_errors(refs, hyps).rate, ms))
    agree, better = None, [0, 0, 0]  # differing transcripts where ours / pyctcdecode's scores higher / ties
    try:
        ref_dec = pyctcdecode_decoder(labels, args.lm, alpha, beta, unk)
        kw = dict(beam_width=args.beam, token_min_logp=args.token_min_logp, beam_prune_logp=args.beam_prune_logp)
        ref_dec.decode(items[0], **kw)
        hyps_ref, ms = timed(lambda x: ref_dec.decode(x, **kw), items, args.repeats)
        rows.append(("pyctcdecode decode()", word_errors(refs, hyps_ref).rate, ms))
        hyps_full, ms = timed(lambda x: ref_dec.decode_beams(x, **kw)[0][0], items, args.repeats)
        rows.append(("pyctcdecode decode_beams", word_errors(refs, hyps_full).rate, ms))
        agree = (sum(a == b for a, b in zip(hyps_ours, hyps_full)) / len(items),
                 sum(a == b for a, b in zip(hyps_ours, hyps_ref)) / len(items))
        # where the transcripts differ, which search found the better transcript under the fused objective? (The LM
        # terms are pyctcdecode's too; it ranks by its beam's acoustic score, we by the exact CTC log-prob.)
        for lp, a, b in zip(items, hyps_ours, hyps_full):
            if a != b:
                sa, sb = fused_score(ours, lp, a), fused_score(ours, lp, b)
                if sa is not None and sb is not None:
                    better[0 if sa > sb + 1e-6 else 1 if sb > sa + 1e-6 else 2] += 1
    except ImportError:
        print("pyctcdecode is not installed (pip install --no-deps pyctcdecode pygtrie): skipped")
    try:
        from torchaudio.models.decoder import ctc_decoder  # noqa: F401

        print("torchaudio's Flashlight decoder is installed but needs a lexicon; not compared in this version")
    except ImportError:
        pass

    base = dict((name, ms) for name, _, ms in rows).get("pyctcdecode decode()")
    print(f"\n{'decoder':<24} {'WER %':>7} {'ms/utt':>9} {'speed vs pyctcdecode':>21}")
    for name, wer, ms in rows:
        ratio = f"{base / ms:.1f}x" if base else "-"
        print(f"{name:<24} {100 * wer:>7.2f} {ms:>9.2f} {ratio:>21}")
    if agree is not None:
        print(f"\nsame transcript as pyctcdecode: {100 * agree[0]:.1f}% of utterances against its plain beam search "
              f"(decode_beams), {100 * agree[1]:.1f}% against decode() (which also prunes beams by LM history)")
        print(f"where they differ from decode_beams ({sum(better)} utterances), the higher fused score "
              f"under our objective (CTC log-prob + alpha LM + beta words) is ours in {better[0]}, pyctcdecode's in {better[1]}, "
              f"tied in {better[2]}")
    greedy_wer, lm_wer = rows[0][1], rows[1][1]
    if greedy_wer > 0:
        print(f"LM fusion cuts WER by {100 * (greedy_wer - lm_wer) / greedy_wer:.1f}% relative to greedy")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [dict(decoder=n, wer=w, ms_per_utt=m) for n, w, m in rows],
                                               "agreement": agree, "higher_score_ours_theirs_tied": better,
                                               "alpha": alpha, "beta": beta, "beam": args.beam,
                                               "utterances": len(items)}, indent=2))
    assert all(math.isfinite(r[1]) for r in rows)


if __name__ == "__main__":
    main()
