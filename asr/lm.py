"""Word n-gram language models for shallow fusion: KenLM queries in natural log, states cached.

Scores follow the usual CTC-decoder convention (as in pyctcdecode and DeepSpeech):
each completed word adds `alpha * ln p(word | history) + beta`; a word outside the LM's vocabulary
also pays `unk_offset` (log10 units, like KenLM's own scores); the end of the utterance adds
`alpha * ln p(</s> | history)`. A partial word that starts no known word pays `alpha * unk_offset`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import kenlm

LN10 = math.log(10.0)


def arpa_unigrams(path: str | Path) -> list[str]:
    """The words of an ARPA file's 1-gram section (without <s>, </s>, <unk>)."""
    words, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
                continue
            if inside:
                if line.startswith("\\"):
                    break
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                    words.append(parts[1])
    return words


class LMError(ValueError):
    """The language model file is missing or not a KenLM model."""


class WordLM:
    """A KenLM model scored for beam search; `unigrams` enables the partial-word check."""

    def __init__(self, path: str | Path, alpha: float = 0.5, beta: float = 1.0, unk_offset: float = -10.0,
                 unigrams: Iterable[str] | None = None):
        path = Path(path)
        if not path.exists():
            raise LMError(f"language model not found: {path}")
        try:
            self.model = kenlm.Model(str(path))
        except OSError as e:
            raise LMError(f"{path}: not a readable KenLM model ({str(e).split('threw')[-1].strip()[:200]})") from None
        self.alpha, self.beta, self.unk_offset = alpha, beta, unk_offset
        if unigrams is None:
            sidecar = path.with_suffix(".unigrams.txt")
            if sidecar.exists():
                unigrams = sidecar.read_text(encoding="utf-8").split()
            elif path.suffix == ".arpa":
                unigrams = arpa_unigrams(path)
        self.unigrams = set(unigrams or ())
        self.prefixes = {w[:i] for w in self.unigrams for i in range(1, len(w) + 1)}
        self._cache: dict[tuple[int, str], tuple[float, kenlm.State]] = {}
        self._states: list[kenlm.State] = []

    def start(self) -> int:
        """Id of the sentence-start state."""
        state = kenlm.State()
        self.model.BeginSentenceWrite(state)
        self._states = [state]
        self._cache.clear()
        return 0

    def score_word(self, state_id: int, word: str) -> tuple[float, int]:
        """(fused score of `word` after state `state_id`, id of the new state)."""
        key = (state_id, word)
        hit = self._cache.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        out = kenlm.State()
        log10p = self.model.BaseScore(self._states[state_id], word, out)
        if (self.unigrams and word not in self.unigrams) or word not in self.model:
            log10p += self.unk_offset
        self._states.append(out)
        result = (self.alpha * log10p * LN10 + self.beta, len(self._states) - 1)
        self._cache[key] = result
        return result

    def score_end(self, state_id: int) -> float:
        """Fused score of ending the sentence after state `state_id`."""
        out = kenlm.State()
        return self.alpha * self.model.BaseScore(self._states[state_id], "</s>", out) * LN10

    def score_partial(self, partial: str) -> float:
        """Penalty for a word in progress that begins no word of the LM (0 when it may still be one)."""
        if not self.prefixes or partial in self.prefixes:
            return 0.0
        penalty = self.unk_offset * (len(partial) / 6 if len(partial) > 6 else 1.0)
        return self.alpha * penalty * LN10
