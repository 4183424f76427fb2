"""CTC decoding: greedy best path (batched), and prefix beam search with KenLM word fusion."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .lm import WordLM
from .text import CharVocabulary


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path token ids per utterance: argmax per frame, repeats collapsed, blanks dropped."""
    best = log_probs.argmax(dim=-1)  # (N, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    keep &= torch.arange(best.shape[1], device=best.device)[None, :] < lengths[:, None].to(best.device)
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(best.shape[0])]


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: CharVocabulary) -> list[str]:
    """Greedy transcripts of a batch of log-probs (N, T, C)."""
    return [vocab.decode(ids) for ids in greedy_ids(log_probs, lengths, vocab.blank)]


# ------------------------------------------------------------------ prefix beam search
_NEG_INF = -math.inf
WORD_START = "\u2581"  # SentencePiece's word-start mark


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@dataclass
class _Beam:
    tokens: tuple[int, ...]
    p_b: float = _NEG_INF  # log P(prefix, path ends in blank)
    p_nb: float = _NEG_INF  # log P(prefix, path ends in its last token)
    lm_score: float = 0.0  # fused LM score of the completed words
    lm_state: int = 0
    word: str = ""  # word in progress
    word_start: int = -1  # frame where the word in progress began
    words: tuple = ()  # completed (word, start frame, end frame)
    last_frame: int = -1  # frame of the last emitted token

    @property
    def p_total(self) -> float:
        return _logaddexp(self.p_b, self.p_nb)


@dataclass
class Hypothesis:
    text: str
    score: float  # acoustic log-probability + LM score
    acoustic_score: float
    lm_score: float
    words: list[dict] = field(default_factory=list)  # {"word", "start_frame", "end_frame"}


class CTCBeamDecoder:
    """CTC prefix beam search with optional KenLM word-level shallow fusion.

    `labels[i]` is the text of output i: characters with " " between words, or SentencePiece
    pieces whose "▁" marks a word start. Without `lm_path` it is a plain prefix beam search.
    """

    def __init__(self, labels: list[str], blank: int = 0, lm_path: str | None = None, alpha: float = 0.5,
                 beta: float = 1.0, beam_width: int = 100, token_min_logp: float = -8.0,
                 beam_prune_logp: float = -12.0, unk_offset: float = -10.0, unigrams: list[str] | None = None,
                 frame_seconds: float | None = None):
        self.labels = list(labels)
        self.blank = blank
        self.beam_width = beam_width
        self.token_min_logp = token_min_logp
        self.beam_prune_logp = beam_prune_logp
        self.frame_seconds = frame_seconds
        self.pieces = any(WORD_START in lab for lab in self.labels)
        self.lm = WordLM(lm_path, alpha, beta, unk_offset, unigrams) if lm_path else None

    def _extend(self, beam: _Beam, token: int, t: int) -> _Beam:
        label = self.labels[token]
        new = _Beam(beam.tokens + (token,), lm_score=beam.lm_score, lm_state=beam.lm_state, word=beam.word,
                    word_start=beam.word_start, words=beam.words, last_frame=t)
        starts_word = label == " " or (self.pieces and label.startswith(WORD_START))
        if starts_word:
            if new.word:
                new.words = new.words + ((new.word, new.word_start, beam.last_frame),)
                if self.lm is not None:
                    score, new.lm_state = self.lm.score_word(new.lm_state, new.word)
                    new.lm_score += score
            new.word = label.lstrip(WORD_START) if self.pieces else ""
            new.word_start = t if new.word else -1
        else:
            if not new.word:
                new.word_start = t
            new.word += label
        return new

    def _rank(self, beam: _Beam) -> float:
        partial = self.lm.score_partial(beam.word) if self.lm is not None and beam.word else 0.0
        return beam.p_total + beam.lm_score + partial

    def nbest(self, log_probs, n: int = 1) -> list[Hypothesis]:
        """The `n` best hypotheses of one utterance's log-probs (T, V)."""
        lp = np.asarray(log_probs.detach().cpu() if hasattr(log_probs, "detach") else log_probs, dtype=np.float64)
        if self.lm is not None:
            self.lm.start()
        beams = {(): _Beam((), p_b=0.0)}
        for t in range(lp.shape[0]):
            frame = lp[t]
            best_token = int(frame.argmax())
            candidates = [int(c) for c in np.flatnonzero(frame >= self.token_min_logp) if c != self.blank]
            if best_token != self.blank and best_token not in candidates:
                candidates.append(best_token)
            blank_lp = frame[self.blank]
            nxt: dict[tuple[int, ...], _Beam] = {}

            def slot(beam: _Beam, token: int) -> _Beam:
                key = beam.tokens + (token,)
                got = nxt.get(key)
                if got is None:
                    got = nxt[key] = self._extend(beam, token, t)
                return got

            for beam in beams.values():
                total = beam.p_total
                same = nxt.get(beam.tokens)
                if same is None:
                    same = nxt[beam.tokens] = _Beam(beam.tokens, lm_score=beam.lm_score, lm_state=beam.lm_state,
                                                    word=beam.word, word_start=beam.word_start, words=beam.words,
                                                    last_frame=beam.last_frame)
                same.p_b = _logaddexp(same.p_b, total + blank_lp)
                last = beam.tokens[-1] if beam.tokens else -1
                for c in candidates:
                    lpc = frame[c]
                    if c == last:
                        same.p_nb = _logaddexp(same.p_nb, beam.p_nb + lpc)
                        if beam.p_b != _NEG_INF:
                            ext = slot(beam, c)
                            ext.p_nb = _logaddexp(ext.p_nb, beam.p_b + lpc)
                    else:
                        ext = slot(beam, c)
                        ext.p_nb = _logaddexp(ext.p_nb, total + lpc)
            ranked = sorted(((self._rank(b), b) for b in nxt.values()), key=lambda rb: rb[0], reverse=True)
            floor = ranked[0][0] + self.beam_prune_logp
            beams = {b.tokens: b for r, b in ranked[: self.beam_width] if r >= floor}
        return self._finish(list(beams.values()), n)

    def _finish(self, beams: list[_Beam], n: int) -> list[Hypothesis]:
        results = []
        for b in beams:
            lm_score, state, words = b.lm_score, b.lm_state, list(b.words)
            if b.word:
                words.append((b.word, b.word_start, b.last_frame))
                if self.lm is not None:
                    score, state = self.lm.score_word(state, b.word)
                    lm_score += score
            if self.lm is not None:
                lm_score += self.lm.score_end(state)
            acoustic = b.p_total
            timed = []
            for w, s, e in words:
                item = {"word": w, "start_frame": s, "end_frame": e}
                if self.frame_seconds:
                    item.update(start=round(s * self.frame_seconds, 3), end=round((e + 1) * self.frame_seconds, 3))
                timed.append(item)
            results.append(Hypothesis(" ".join(w for w, _, _ in words), acoustic + lm_score, acoustic, lm_score, timed))
        results.sort(key=lambda h: h.score, reverse=True)
        return results[:n]

    def decode(self, log_probs) -> str:
        """Best transcript of one utterance's log-probs (T, V)."""
        return self.nbest(log_probs, 1)[0].text

    def decode_batch(self, log_probs, lengths) -> list[str]:
        """Best transcripts of a padded batch (N, T, V) with valid lengths (N,)."""
        return [self.decode(log_probs[i, : int(lengths[i])]) for i in range(len(lengths))]
