"""Make tests/data/synthetic_en_logprobs.npz: real acoustic-model outputs for the decoder tests.

Takes a model trained by the default recipe (`asr recipe run recipes/synthetic_en`), runs it over
the first --count test utterances (held-out voices and sentences), and stores the log-probabilities
(float16), references and labels, plus the recipe's LM text (training sentences only) beside it.
Rerun: python scripts/make_decoder_fixture.py --model exp/synthetic_en/best.pt \
           --manifest data/synthetic_en/manifests/test.jsonl --lm-text data/synthetic_en/lm_text.txt
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from asr.lm_tune import cached_log_probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="exp/synthetic_en/best.pt")
    ap.add_argument("--manifest", default="data/synthetic_en/manifests/test.jsonl")
    ap.add_argument("--lm-text", default="data/synthetic_en/lm_text.txt")
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--out", default="tests/data/synthetic_en_logprobs.npz")
    args = ap.parse_args()
    log_probs, refs, info = cached_log_probs(args.model, args.manifest)
    log_probs, refs = log_probs[: args.count], refs[: args.count]
    lengths = np.array([len(lp) for lp in log_probs])
    flat = np.concatenate([lp.numpy() for lp in log_probs]).astype(np.float16)
    np.savez_compressed(args.out, log_probs=flat, lengths=lengths, refs=np.array(refs),
                        labels=np.array(json.dumps(info["labels"])), frame_seconds=info["frame_seconds"])
    shutil.copy(args.lm_text, Path(args.out).with_name("synthetic_en_lm_text.txt"))
    print(f"wrote {args.out}: {len(refs)} utterances, {lengths.sum()} frames")


if __name__ == "__main__":
    main()
