"""Word and character error rates with jiwer, pooled over a corpus, with per-utterance detail."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


@dataclass
class ErrorCounts:
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def rate(self) -> float:
        errors = self.substitutions + self.deletions + self.insertions
        return errors / self.reference_length if self.reference_length else float(errors > 0)


def _counts(out) -> ErrorCounts:
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def _guard(texts: Sequence[str]) -> list[str]:
    # jiwer rejects empty strings on either side; score an empty text as zero words
    return [t if t.strip() else "" for t in texts]


def _pooled(refs: Sequence[str], hyps: Sequence[str], process, size) -> ErrorCounts:
    """Pooled counts from jiwer's `process` over non-empty pairs; empty sides counted by `size`."""
    s = d = i = h = 0
    pairs = list(zip(_guard(refs), _guard(hyps)))
    nonempty = [(r, y) for r, y in pairs if r and y]
    if nonempty:
        c = _counts(process([r for r, _ in nonempty], [y for _, y in nonempty]))
        s, d, i, h = c.substitutions, c.deletions, c.insertions, c.hits
    for r, y in pairs:
        if not r:
            i += size(y)
        elif not y:
            d += size(r)
    return ErrorCounts(s, d, i, h)


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorCounts:
    """Pooled word error counts over all pairs (corpus WER, not a mean of per-utterance WERs)."""
    return _pooled(refs, hyps, jiwer.process_words, lambda t: len(t.split()))


def char_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorCounts:
    """Pooled character error counts (spaces count as characters, as jiwer's cer does)."""
    return _pooled(refs, hyps, jiwer.process_characters, len)


def alignment(ref: str, hyp: str) -> list[dict]:
    """Word alignment of one pair: a list of {op, ref, hyp} chunks (equal/substitute/delete/insert)."""
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words or not hyp_words:
        if ref_words:
            return [{"op": "delete", "ref": " ".join(ref_words), "hyp": ""}]
        return [{"op": "insert", "ref": "", "hyp": " ".join(hyp_words)}] if hyp_words else []
    out = jiwer.process_words(ref, hyp)
    return [
        {"op": c.type, "ref": " ".join(ref_words[c.ref_start_idx:c.ref_end_idx]),
         "hyp": " ".join(hyp_words[c.hyp_start_idx:c.hyp_end_idx])}
        for c in out.alignments[0]
    ]


def score(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    """Corpus WER and CER with their substitution/deletion/insertion counts."""
    w, c = word_errors(refs, hyps), char_errors(refs, hyps)
    return {
        "wer": w.rate, "cer": c.rate, "utterances": len(refs),
        "words": w.reference_length, "word_errors": asdict(w),
        "chars": c.reference_length, "char_errors": asdict(c),
    }


def hypothesis_word_correct(ref: str, hyp: str) -> list[bool]:
    """For each word of `hyp`, whether the alignment to `ref` matches it (substituted and inserted words are not)."""
    hyp_words = hyp.split()
    if not hyp_words:
        return []
    if not ref.split():
        return [False] * len(hyp_words)
    marks = [False] * len(hyp_words)
    for c in jiwer.process_words(ref, hyp).alignments[0]:
        if c.type == "equal":
            for i in range(c.hyp_start_idx, c.hyp_end_idx):
                marks[i] = True
    return marks
