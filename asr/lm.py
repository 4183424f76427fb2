"""Word n-gram language models for shallow fusion: KenLM queries in natural log, states cached.

Scores follow the usual CTC-decoder convention (as in pyctcdecode and DeepSpeech):
each completed word adds `alpha * ln p(word | history) + beta`; a word outside the LM's vocabulary
also pays `unk_offset` (log10 units, like KenLM's own scores); the end of the utterance adds
`alpha * ln p(</s> | history)`. The decoder penalises partial words that start no word of `prefixes`.
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
        self.path = path
        self.alpha, self.beta, self.unk_offset = alpha, beta, unk_offset
        if unigrams is None:
            sidecar = path.with_suffix(".unigrams.txt")
            if sidecar.exists():
                unigrams = sidecar.read_text(encoding="utf-8").split()
            elif path.suffix == ".arpa":
                unigrams = arpa_unigrams(path)
        self.unigrams = set(unigrams or ())
        self.prefixes = {w[:i] for w in self.unigrams for i in range(1, len(w) + 1)}
        self._cache: dict[tuple[int, str], tuple[float, int]] = {}  # raw ln p, not yet weighted
        self._states: list[kenlm.State] = []
        self._ids: dict[kenlm.State, int] = {}
        self._end: dict[int, float] = {}
        self._generation = [0]  # bumped whenever state ids are dropped; shared by copies (see `generation`)

    @property
    def generation(self) -> int:
        """How many times the state ids were dropped. A copy (a decoder with its own alpha and beta) shares the
        caches and this counter, so whichever copy drops the states, every copy's compiled caches see it."""
        return self._generation[0]

    def _intern(self, state: kenlm.State) -> int:
        sid = self._ids.get(state)
        if sid is None:
            sid = self._ids[state] = len(self._states)
            self._states.append(state)
        return sid

    def start(self) -> int:
        """Id of the sentence-start state. Scores and states stay cached across utterances."""
        if len(self._states) > _MAX_CACHED_STATES:
            self._cache.clear(), self._states.clear(), self._ids.clear(), self._end.clear()
            self._generation[0] += 1
        state = kenlm.State()
        self.model.BeginSentenceWrite(state)
        return self._intern(state)

    def raw_score(self, state_id: int, word: str) -> tuple[float, int]:
        """(ln p(word | state), with the OOV offset; id of the new state), before alpha and beta."""
        key = (state_id, word)
        hit = self._cache.get(key)
        if hit is None:
            out = kenlm.State()
            log10p = self.model.BaseScore(self._states[state_id], word, out)
            if (self.unigrams and word not in self.unigrams) or word not in self.model:
                log10p += self.unk_offset
            hit = self._cache[key] = (log10p * LN10, self._intern(out))
        return hit

    def score_word(self, state_id: int, word: str) -> tuple[float, int]:
        """(fused score of `word` after state `state_id`, id of the new state)."""
        raw, state = self.raw_score(state_id, word)
        return self.alpha * raw + self.beta, state

    def score_end(self, state_id: int) -> float:
        """Fused score of ending the sentence after state `state_id`."""
        got = self._end.get(state_id)
        if got is None:
            got = self._end[state_id] = self.model.BaseScore(self._states[state_id], "</s>", kenlm.State()) * LN10
        return self.alpha * got


_MAX_CACHED_STATES = 2_000_000
