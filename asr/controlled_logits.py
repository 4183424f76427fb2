"""CTC log-probs whose truth is known, for judging decoders: which errors the search makes, which the scoring.

A sentence of words drawn from a tiny vocabulary is laid out three frames per character (the character twice, then
blank), the true label of each frame gets `peak` on top of Gaussian noise on every logit, and a bigram LM over the
same words prefers "hello". A decoder's wrong transcript is a *search error* when the truth scores higher under the
decoder's own objective (exact CTC log-prob + alpha LM + beta per word), and a *scoring error* when it does not: then
no search could have found the truth, and a decoder that returns it anyway got there by luck.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ["<b>", " ", "h", "e", "l", "o", "w", "r", "d", "a", "b", "c", "x"]  # 13 outputs, blank first
WORDS = ("hello", "world", "hallo")
WORD_WEIGHTS = (0.5, 0.3, 0.2)

BIGRAM_ARPA = """\\data\\
ngram 1=6
ngram 2=9

\\1-grams:
-1.0\t<s>\t-0.3
-0.7\t</s>\t0
-0.4\thello\t-0.3
-0.8\tworld\t-0.3
-1.2\thallo\t-0.3
-2.0\t<unk>\t0

\\2-grams:
-0.3\t<s> hello
-0.6\t<s> world
-1.0\t<s> hallo
-0.4\thello world
-0.5\thello hello
-0.7\tworld hello
-0.8\tworld </s>
-1.0\thallo world
-0.6\thello </s>

\\end\\
"""


def write_bigram_lm(path: str | Path, drop: tuple[str, ...] = ()) -> Path:
    """The bigram ARPA above, without the n-grams of the words in `drop` (to make them out-of-vocabulary)."""
    sections: dict[int, list[str]] = {1: [], 2: []}
    order = 0
    for line in BIGRAM_ARPA.splitlines():
        if line.endswith("-grams:"):
            order = int(line[1])
        elif order and "\t" in line and not any(w in drop for w in line.split("\t")[1].split()):
            sections[order].append(line)
    out = ["\\data\\", *(f"ngram {o}={len(grams)}" for o, grams in sections.items())]
    for o, grams in sections.items():
        out += ["", f"\\{o}-grams:", *grams]
    path = Path(path)
    path.write_text("\n".join(out + ["", "\\end\\", ""]), encoding="utf-8")
    return path


def controlled_logits(n: int, seed: int = 0, peak: float = 6.0, noise: float = 1.5,
                      words_per_sentence: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """`n` (log-probs (T, 13) float32, true transcript) pairs; the same seed gives the same pairs."""
    rng = np.random.default_rng(seed)
    items, refs = [], []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS, size=words_per_sentence, p=WORD_WEIGHTS))
        frames = [k for ch in text for k in (LABELS.index(ch), LABELS.index(ch), 0)]
        z = rng.normal(0.0, noise, (len(frames), len(LABELS)))
        z[np.arange(len(frames)), frames] += peak
        z -= np.logaddexp.reduce(z, axis=1, keepdims=True)
        items.append(z.astype(np.float32))
        refs.append(text)
    return items, refs


@dataclass(frozen=True)
class ErrorKinds:
    """How a decoder's transcripts of known-truth log-probs went wrong."""
    sentences: int
    correct: int
    search_errors: int  # the truth scores higher under the objective than what the search returned
    scoring_errors: int  # the returned transcript scores at least as high as the truth


def error_kinds(decoder, items: list[np.ndarray], refs: list[str], hyps: list[str]) -> ErrorKinds:
    """Sort `hyps` (any decoder's) into correct, search errors and scoring errors under `decoder.score`."""
    correct = search = scoring = 0
    for lp, ref, hyp in zip(items, refs, hyps, strict=True):
        if hyp == ref:
            correct += 1
        elif decoder.score(lp, ref) > decoder.score(lp, hyp) + 1e-6:
            search += 1
        else:
            scoring += 1
    return ErrorKinds(len(refs), correct, search, scoring)
