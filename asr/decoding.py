"""CTC decoding: greedy best path (batched), and prefix beam search with KenLM word fusion."""
from __future__ import annotations

import copy
import dataclasses
import heapq
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch

from . import beam_kernel
from .fork_pool import fork_map
from .lm import WordLM
from .text import WORD_START, Vocabulary


def best_path(frame_ids: np.ndarray, blank: int = 0, previous: int = -1) -> np.ndarray:
    """The frames where the best path emits a token: each frame's best token (`frame_ids`, (T,)), repeats collapsed,
    blanks dropped. `previous` is the best token of the frame before the first (a stream carries it across chunks).
    The one greedy decoder: batches, the beam search's greedy candidate and streams all use it."""
    ids = np.asarray(frame_ids)
    before = np.concatenate([[previous], ids[:-1]]) if len(ids) else ids
    return np.flatnonzero((ids != before) & (ids != blank))


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path token ids per utterance of a batch (N, T, C)."""
    best = log_probs.argmax(dim=-1).cpu().numpy()  # (N, T)
    out = []
    for row, n in zip(best, lengths.tolist()):
        row = row[: int(n)]
        out.append(row[best_path(row, blank)].tolist())
    return out


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocab: Vocabulary) -> list[str]:
    """Greedy transcripts of a batch of log-probs (N, T, C)."""
    return [vocab.decode(ids) for ids in greedy_ids(log_probs, lengths, vocab.blank)]


# ------------------------------------------------------------------ prefix beam search
_NEG_INF = -math.inf
RESCORED = 8  # finalists whose acoustic score is recomputed exactly

# the compiled kernel's scalar functions, run as plain Python by the Python engine
_logaddexp = beam_kernel.logaddexp.py_func
_partial_word_penalty = beam_kernel.partial_word_penalty.py_func


def _timed_words(words: list[tuple[str, int, int]], frame_seconds: float | None) -> list[dict]:
    """(word, start frame, end frame) as dicts, with seconds when the frame duration is known."""
    out = []
    for w, s, e in words:
        item = {"word": w, "start_frame": s, "end_frame": e}
        if frame_seconds:
            item.update(start=round(s * frame_seconds, 3), end=round((e + 1) * frame_seconds, 3))
        out.append(item)
    return out


@dataclass
class Hypothesis:
    text: str
    score: float  # acoustic log-probability + LM and hotword score
    acoustic_score: float
    lm_score: float
    words: list[dict] = field(default_factory=list)  # {"word", "start_frame", "end_frame"[, "start", "end"]}
    tokens: list[int] = field(default_factory=list)  # the labeling (token ids) the score belongs to


@dataclass(frozen=True)
class _Prefix:
    """What a label prefix means for scoring (the Python engine's prefix table); fixed once the prefix exists."""
    parent: int
    token: int
    bonus: float  # lm_score + partial-word and hotword terms: added to the acoustic score for ranking
    lm_score: float  # fused LM + hotword score of the completed words
    lm_state: int
    word: str  # word in progress
    frame: int  # frame where the prefix's last token was first emitted


_ROOT = _Prefix(-1, -1, 0.0, 0.0, 0, "", -1)


class _Final(NamedTuple):
    """A beam where a search stands, as either engine leaves it."""
    pid: int  # the prefix's row in the engine's table
    acoustic: float  # log P(the prefix's paths)
    lm_score: float  # fused LM + hotword score of the completed words
    lm_state: int
    word: str  # the word in progress; "" none, "<unk>" where the compiled engine knows only that it is no LM word


class _Search(Protocol):
    """The prefix-search interface both engines implement (`PrefixSearch` in Python, `_Compiled` in numba): after
    a search, its beams and each one's trail. `CTCBeamDecoder._hypotheses` turns them into hypotheses."""

    def finals(self) -> list[_Final]:
        """The beams where the search stands (plain tuples in `_Final`'s order will do)."""

    def trail(self, pid: int) -> list[tuple[int, int]]:
        """(token, frame where it was first emitted) of prefix `pid`, oldest first."""


@dataclass(frozen=True)
class DecodingOptions:
    """How the beam search decodes: every default of the decoder, `asr transcribe/evaluate`, the Recognizer and the
    server is defined here once. alpha and beta matter only with an LM; hotwords are words or phrases, each
    optionally with its own bonus ("amazon queen:15"; else `hotword_weight`)."""

    beam_width: int = 100
    alpha: float = 0.5  # LM weight (pyctcdecode's convention)
    beta: float = 1.0  # word insertion bonus
    token_min_logp: float = -8.0  # tokens below this log-probability in a frame are not tried (but the best)
    beam_prune_logp: float = -12.0  # prefixes this far below the best are dropped
    unk_offset: float = -10.0  # log10 penalty of a word outside the LM
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 10.0

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        hotwords = (self.hotwords,) if isinstance(self.hotwords, str) else tuple(self.hotwords or ())
        object.__setattr__(self, "hotwords", hotwords)


class CTCBeamDecoder:
    """CTC prefix beam search with optional KenLM word-level shallow fusion and hotword boosting.

    `labels[i]` is the text of output i: characters with " " between words, or SentencePiece
    pieces whose "▁" marks a word start. Without `lm_path` it is a plain prefix beam search;
    with `beam_width=1` and no LM or hotwords it is best-path (greedy) decoding.
    Scores follow pyctcdecode's conventions, so the same alpha/beta mean the same thing in both.
    """

    def __init__(self, labels: list[str], blank: int = 0, lm_path: str | None = None,
                 options: DecodingOptions | None = None, unigrams: list[str] | None = None,
                 frame_seconds: float | None = None, processes: int | None = None, engine: str = "auto", **settings):
        """`options`, with any of its fields given as keywords (`beam_width=8`, `alpha=0.75`) changed."""
        if engine not in ("auto", "compiled", "python"):
            raise ValueError(f"engine must be auto, compiled or python, got {engine!r}")
        self.options = opts = dataclasses.replace(options or DecodingOptions(), **settings)
        self.labels = list(labels)
        self.blank = blank
        self.frame_seconds = frame_seconds
        self.processes = processes
        self.pieces = any(WORD_START in lab for lab in self.labels)
        # each token: does it start a word (" ", or a piece's "▁"), and the characters it adds to the word
        self.boundary = [lab == " " or (self.pieces and lab.startswith(WORD_START)) for lab in self.labels]
        self.texts = ["" if i == blank or lab == " " else lab.lstrip(WORD_START) if self.pieces else lab
                      for i, lab in enumerate(self.labels)]
        self.lm = WordLM(lm_path, opts.alpha, opts.beta, opts.unk_offset, unigrams) if lm_path else None
        self._set_hotwords(opts.hotwords, opts.hotword_weight)
        # the compiled search needs the LM's word list (for word ids and the prefix check); hotwords use Python
        compiled_ok = not self.hotwords and (self.lm is None or bool(self.lm.unigrams))
        if engine == "compiled" and not compiled_ok:
            raise ValueError("the compiled engine needs the LM's word list (an ARPA file or <lm>.unigrams.txt) "
                             "and no hotwords")
        self.engine = "python" if engine == "python" or not compiled_ok else "compiled"
        self._compiled: _Compiled | None = None

    @property
    def beam_width(self) -> int:
        return self.options.beam_width

    @property
    def token_min_logp(self) -> float:
        return self.options.token_min_logp

    @property
    def beam_prune_logp(self) -> float:
        return self.options.beam_prune_logp

    @property
    def unk_offset(self) -> float:
        return self.options.unk_offset

    def with_options(self, **settings) -> "CTCBeamDecoder":
        """A decoder like this one with some DecodingOptions changed (beam_width, alpha, beta, hotwords,
        hotword_weight; None keeps the current value), sharing its loaded LM (KenLM model and caches):
        per-request options in a server without loading the LM again. Not safe to run concurrently with this one."""
        settings = {k: v for k, v in settings.items() if v is not None}
        if set(settings) - {"beam_width", "alpha", "beta", "hotwords", "hotword_weight"}:
            raise ValueError(f"with_options cannot change {sorted(settings)}")
        dec = CTCBeamDecoder.__new__(CTCBeamDecoder)
        dec.__dict__.update(self.__dict__)
        dec.options = dataclasses.replace(self.options, **settings)
        if self.lm is not None and ("alpha" in settings or "beta" in settings):
            dec.lm = copy.copy(self.lm)  # own alpha and beta; the model and the score caches are shared
            dec.reset_params(settings.get("alpha"), settings.get("beta"))
        if "hotwords" in settings or "hotword_weight" in settings:
            dec._set_hotwords(dec.options.hotwords, dec.options.hotword_weight)
            if dec.hotwords:
                dec.engine = "python"  # the compiled engine has no hotwords
        dec._partial, dec._compiled = {}, None
        return dec

    def _set_hotwords(self, hotwords: Iterable[str] | None, weight: float) -> None:
        """Hotwords as words or phrases, each optionally with its own bonus ("amazon queen:15"; else `weight`)."""
        self.hotwords: dict[str, float] = {}  # word -> bonus when completed
        for item in hotwords or ():
            phrase, sep, value = item.rpartition(":")
            if not sep:
                phrase, value = item, ""
            try:
                bonus = float(value) if value.strip() else weight
            except ValueError:
                raise ValueError(f"hotword {item!r}: the part after ':' must be a number (its bonus)") from None
            for w in phrase.split():
                self.hotwords[w] = max(self.hotwords.get(w, bonus), bonus)
        self.hotword_weight = weight
        self._hot_prefixes: dict[str, tuple[int, float]] = {}  # prefix -> (length, bonus) of the shortest hotword
        for w, bonus in sorted(self.hotwords.items(), key=lambda kv: len(kv[0]), reverse=True):
            for i in range(1, len(w) + 1):
                self._hot_prefixes[w[:i]] = (len(w), bonus)
        self._partial: dict[str, float] = {}

    def reset_params(self, alpha: float | None = None, beta: float | None = None) -> None:
        """Change the LM weight and word bonus; cached LM queries stay valid."""
        self.options = dataclasses.replace(self.options, **{k: v for k, v in (("alpha", alpha), ("beta", beta))
                                                            if v is not None})
        if self.lm is not None:
            self.lm.alpha, self.lm.beta = self.options.alpha, self.options.beta

    # ---------------------------------------------------------------- scoring of prefixes
    def _partial_score(self, word: str) -> float:
        """Ranking term for a word in progress: hotword bonus, or the LM's penalty when it starts no known word."""
        got = self._partial.get(word)
        if got is None:
            got = 0.0
            if word in self._hot_prefixes:
                length, bonus = self._hot_prefixes[word]
                got = bonus * len(word) / length
            elif self.lm is not None and self.lm.prefixes and word not in self.lm.prefixes:
                got = _partial_word_penalty(len(word), self.unk_offset)
            self._partial[word] = got
        return got

    def _word_score(self, state: int, word: str) -> tuple[float, int]:
        score, state = self.lm.score_word(state, word) if self.lm is not None else (0.0, state)
        if word in self.hotwords:
            score += self.hotwords[word]
        return score, state

    def _child(self, p: _Prefix, parent: int, token: int, t: int) -> _Prefix:
        """The prefix `p` (row `parent`) extended by `token`, first emitted at frame t: the Python engine's
        scoring, which the compiled kernel's `_score_new_prefix` mirrors (the two are tested equal)."""
        lm_score, lm_state, word = p.lm_score, p.lm_state, p.word
        if self.boundary[token]:
            if word:
                score, lm_state = self._word_score(lm_state, word)
                lm_score += score
            word = self.texts[token]
        else:
            word += self.texts[token]
        bonus = lm_score + (self._partial_score(word) if word else 0.0)
        return _Prefix(parent, token, bonus, lm_score, lm_state, word, t)

    def _words(self, trail: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
        """(word, first frame, last frame) of a prefix's (token, frame) trail."""
        words, word, start, end = [], "", -1, -1
        for tok, t in trail:
            if self.boundary[tok]:
                if word:
                    words.append((word, start, end))
                word, start, end = self.texts[tok], t, t
            else:
                if not word:
                    start = t
                word += self.texts[tok]
                end = t
        if word:
            words.append((word, start, end))
        return words

    def _hypotheses(self, search: _Search, n: int) -> list[Hypothesis]:
        """The `n` best of a search's beams as hypotheses: the word in progress completed, the sentence ended,
        ranked by acoustic + LM score; either engine's search ends here."""
        ranked = []
        for pid, acoustic, lm_score, state, word in search.finals():
            if word:
                score, state = self._word_score(state, word)
                lm_score += score
            if self.lm is not None:
                lm_score += self.lm.score_end(state)
            ranked.append((acoustic + lm_score, acoustic, lm_score, pid))
        ranked.sort(key=lambda r: r[0], reverse=True)
        out = []
        for total, acoustic, lm_score, pid in ranked[:n]:
            trail = search.trail(pid)
            words = self._words(trail)
            out.append(Hypothesis(" ".join(w for w, _, _ in words), total, acoustic, lm_score,
                                  _timed_words(words, self.frame_seconds), [tok for tok, _ in trail]))
        return out or [Hypothesis("", 0.0, 0.0, 0.0)]

    # ---------------------------------------------------------------- search
    def nbest(self, log_probs, n: int = 1) -> list[Hypothesis]:
        """The `n` best hypotheses of one utterance's log-probs (T, V)."""
        lp = np.asarray(log_probs.detach().cpu() if hasattr(log_probs, "detach") else log_probs, dtype=np.float64)
        if lp.ndim != 2 or (lp.size and lp.shape[1] != len(self.labels)):
            raise ValueError(f"log_probs must be (T, {len(self.labels)}), got {tuple(lp.shape)}")
        if self.beam_width == 1 and self.lm is None and not self.hotwords:
            return [self._best_path(lp)]
        if self.engine == "compiled":
            if self._compiled is None:
                self._compiled = _Compiled(self)
            search = self._compiled
            search.run(lp)
        else:
            search = PrefixSearch(self)
            search.advance(lp)
        return self._rescore(lp, self._hypotheses(search, max(n, RESCORED)), n)

    def _rescore(self, lp: np.ndarray, hyps: list[Hypothesis], n: int) -> list[Hypothesis]:
        """Exact acoustic scores for the finalists and the greedy labeling, then the `n` best distinct transcripts.

        The search's prefix probabilities lose the mass of pruned alignments; the exact forward
        score repairs the final order and, without an LM, makes the result never worse than greedy.
        """
        pool = list(hyps)
        if len(lp) and self.lm is None and not self.hotwords:
            best = lp.argmax(axis=1)
            greedy = tuple(best[best_path(best, self.blank)].tolist())
            if all(tuple(h.tokens) != greedy for h in pool):
                pool.append(self._best_path(lp))
        seen, out = set(), []
        for h in pool:
            key = tuple(h.tokens)
            if key in seen:
                continue
            seen.add(key)
            exact = float(beam_kernel.labeling_logp(lp, np.asarray(h.tokens, dtype=np.int64), self.blank))
            out.append(Hypothesis(h.text, exact + h.lm_score, exact, h.lm_score, h.words, h.tokens))
        out.sort(key=lambda h: h.score, reverse=True)
        texts: set[str] = set()  # labelings that differ only in spaces give one transcript: the best of them
        out = [h for h in out if not (h.text in texts or texts.add(h.text))]
        return out[:n] or [Hypothesis("", 0.0, 0.0, 0.0)]

    def _candidates(self, lp: np.ndarray) -> np.ndarray:
        """(T, V) mask of the tokens each frame may emit: >= token_min_logp, or the frame's best; never blank."""
        mask = lp >= self.token_min_logp
        if len(lp):
            mask[np.arange(len(lp)), lp.argmax(axis=1)] = True
        mask[:, self.blank] = False
        return mask

    def stream(self) -> "PrefixSearch":
        """A search that takes an utterance's frames as they come (streaming): `advance`, then `best` or `result`."""
        return PrefixSearch(self)

    def _best_path(self, lp: np.ndarray) -> Hypothesis:
        """The best path as a hypothesis, scored like a beam (LM and hotwords included)."""
        best = lp.argmax(axis=1)
        search = PrefixSearch(self)
        table = search.table
        for t in best_path(best, self.blank).tolist():
            table.append(self._child(table[-1], len(table) - 1, int(best[t]), t))
        search.beams = [(len(table) - 1, float(lp[np.arange(len(lp)), best].sum()), _NEG_INF)]
        return self._hypotheses(search, 1)[0]

    def score(self, log_probs, text: str) -> float:
        """The search's objective for a transcript of character labels: the exact CTC log-probability of its best
        labeling (the words with or without a space at either end) plus the LM and hotword terms of its words and
        the sentence end. `nbest` ranks its finalists by this."""
        if self.pieces:
            raise ValueError("score() takes character vocabularies; a piece vocabulary's text has many labelings")
        index = {lab: i for i, lab in enumerate(self.labels) if i != self.blank}
        missing = sorted({c for c in text if c not in index})
        if missing:
            raise ValueError(f"characters outside the decoder's labels: {''.join(missing)!r} in {text!r}")
        lp = np.asarray(log_probs, dtype=np.float64)
        words = text.split()
        core = " ".join(words)
        variants = {core, f" {core}", f"{core} ", f" {core} "} if " " in index else {core}
        total = max(float(beam_kernel.labeling_logp(lp, np.asarray([index[c] for c in v], dtype=np.int64),
                                                    self.blank)) for v in variants)
        state = self.lm.start() if self.lm is not None else 0
        for word in words:
            word_score, state = self._word_score(state, word)
            total += word_score
        return total + (self.lm.score_end(state) if self.lm is not None else 0.0)

    def decode(self, log_probs) -> str:
        """Best transcript of one utterance's log-probs (T, V)."""
        return self.nbest(log_probs, 1)[0].text

    def decode_batch(self, log_probs, lengths, processes: int | None = None) -> list[str]:
        """Best transcripts of a padded batch (N, T, V) with valid lengths (N,), over processes when large."""
        return [h[0].text for h in self.nbest_batch(log_probs, lengths, 1, processes)]

    def nbest_batch(self, log_probs, lengths, n: int = 1, processes: int | None = None) -> list[list[Hypothesis]]:
        """`nbest` of every utterance of a padded batch; several processes share the work (fork, Linux)."""
        items = [np.asarray(log_probs[i, : int(lengths[i])].detach().cpu() if hasattr(log_probs, "detach")
                            else log_probs[i, : int(lengths[i])], dtype=np.float32) for i in range(len(lengths))]
        return self.nbest_many(items, n, processes)

    def nbest_many(self, items: Sequence, n: int = 1, processes: int | None = None) -> list[list[Hypothesis]]:
        """`nbest` of each (T_i, V) array in `items`."""
        processes = self.processes if processes is None else processes
        if processes is None:
            processes = min(os.cpu_count() or 1, len(items) // _MIN_ITEMS_PER_PROCESS)
        return fork_map(_nbest_of, (self, n), items, processes, chunksize=max(1, len(items) // (4 * max(processes, 1))))


class _Compiled:
    """The compiled engine (`asr.beam_kernel`) for one decoder: its lexicon (token texts and the LM's word trie),
    the LM cache, and the prefix table and beams of the last search; `run` searches an utterance."""

    def __init__(self, dec: CTCBeamDecoder):
        k = beam_kernel
        self.dec = dec
        self.words = sorted(dec.lm.unigrams) if dec.lm is not None else []
        charset = sorted({ch for t in dec.texts for ch in t} | {ch for w in self.words for ch in w})
        char_id = {ch: i for i, ch in enumerate(charset)}
        self.n_chars = len(charset) + 1
        tok_chars = np.array([char_id[ch] for t in dec.texts for ch in t], dtype=np.int64)
        tok_ptr = np.concatenate([[0], np.cumsum([len(t) for t in dec.texts])]).astype(np.int64)
        trie = k.new_trie()
        self.node_word = np.full(1, -1, dtype=np.int64)
        if self.words:
            chars = np.array([char_id[ch] for w in self.words for ch in w], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum([len(w) for w in self.words])]).astype(np.int64)
            self.node_word = np.full(len(chars) + 1, -1, dtype=np.int64)
            n_nodes = k.build_trie(chars, offsets, self.n_chars, trie, self.node_word)
            self.node_word = self.node_word[:n_nodes].copy()
        self.lexicon = k.Lexicon(np.array(dec.boundary), tok_ptr, tok_chars, trie, self.node_word)
        self.n_words = len(self.words) + 1  # the last word id is <unk>
        self.cache_score, self.cache_next = k.new_cache()
        self.cache = k.LMCache(self.cache_score, self.cache_next)
        self.cache_generation = -1
        self.table = k.PrefixTable()
        self.req = np.zeros((4096, 2), dtype=np.int64)
        self.nxt, self.nxt_struct = k.new_beams(0)  # the next beams, as a frame makes them
        self.start, self.start_struct = k.new_beams(0)  # the beams a frame starts from
        self.trace_buf = np.zeros((2, 0), dtype=np.int64)
        self.beams = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0))  # pids, log P(blank end), log P(token end)

    def run(self, lp: np.ndarray) -> None:
        """Search one utterance's log-probs (T, V); the beams stay for `finals` and `trail`."""
        k, dec, lm = beam_kernel, self.dec, self.dec.lm
        mask = dec._candidates(lp)
        counts = mask.sum(axis=1)
        cand_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cand_tok = np.nonzero(mask)[1].astype(np.int64)
        frames = np.flatnonzero(counts).astype(np.int64)
        cumblank = np.concatenate([[0.0], np.cumsum(lp[:, dec.blank])])
        start = lm.start() if lm is not None else 0  # (may drop the LM's state ids: checked next)
        if lm is not None and lm.generation != self.cache_generation:  # the LM dropped its state ids
            self.cache_score.clear(), self.cache_next.clear()
            self.cache_generation = lm.generation
        width = dec.beam_width
        need = width * (int(counts.max(initial=0)) + 1)
        if len(self.nxt["pid"]) < need:
            self.nxt, self.nxt_struct = k.new_beams(need)
        if len(self.start["pid"]) != width:
            self.start, self.start_struct = k.new_beams(width)
        beams = self.start
        beams["pid"][0], beams["pb"][0], beams["pnb"][0] = 0, 0.0, -np.inf  # one beam: the empty prefix
        alpha, beta = (lm.alpha, lm.beta) if lm is not None else (0.0, 0.0)
        settings = k.Settings(dec.blank, width, dec.beam_prune_logp, lm is not None, bool(self.words), alpha, beta,
                              dec.unk_offset, self.n_chars, self.n_words)
        self.table.reset(start)
        pos = np.array([0, 0, 1, 1], dtype=np.int64)
        while True:
            status, n_req = k.search(lp, frames, cand_ptr, cand_tok, cumblank, settings, self.lexicon, self.cache,
                                     self.table.struct, self.start_struct, self.nxt_struct, self.req, pos)
            if status == k.DONE:
                break
            if status == k.FULL:
                self.table.grow()
                continue
            for st, w in self.req[:n_req].tolist():
                raw, nxt = lm.raw_score(st, self.words[w] if w < len(self.words) else "<unk>")
                self.cache_score[st * self.n_words + w] = raw
                self.cache_next[st * self.n_words + w] = nxt
        n = int(pos[2])
        pids, pb, pnb = beams["pid"][:n].copy(), beams["pb"][:n].copy(), beams["pnb"][:n].copy()
        if pos[1] < len(lp):  # trailing blank-only frames
            pb, pnb = np.logaddexp(pb, pnb) + (cumblank[-1] - cumblank[pos[1]]), np.full(n, -np.inf)
        self.beams = (pids, pb, pnb)
        if self.trace_buf.shape[1] < len(frames) + 1:
            self.trace_buf = np.zeros((2, len(frames) + 1), dtype=np.int64)

    def finals(self) -> list[_Final]:
        a, (pids, pb, pnb) = self.table.arrays, self.beams
        words = [""] * len(pids)  # without an LM the word in progress scores nothing: no need to name it
        for i in np.flatnonzero(a["wlen"][pids] > 0).tolist() if self.dec.lm is not None else ():
            node = int(a["node"][pids[i]])
            w = int(self.node_word[node]) if node >= 0 else -1
            words[i] = self.words[w] if w >= 0 else "<unk>"  # a word outside the LM scores as <unk>
        return list(zip(pids.tolist(), np.logaddexp(pb, pnb).tolist(), a["lm"][pids].tolist(),
                        a["state"][pids].tolist(), words))

    def trail(self, pid: int) -> list[tuple[int, int]]:
        n = beam_kernel.trace(self.table.struct, pid, self.trace_buf)
        return list(zip(self.trace_buf[0, :n][::-1].tolist(), self.trace_buf[1, :n][::-1].tolist()))


_MIN_ITEMS_PER_PROCESS = 16


class PrefixSearch:
    """The Python engine's prefix beam search, resumable: `advance` takes the next frames of one utterance,
    `best` ranks the beams as they stand (partial results while streaming), `result` rescores the finalists
    over all the frames as `CTCBeamDecoder.nbest` does."""

    def __init__(self, dec: CTCBeamDecoder):
        self.dec = dec
        start_state = dec.lm.start() if dec.lm is not None else 0
        self.table = [dataclasses.replace(_ROOT, lm_state=start_state)]
        self.children: dict[tuple[int, int], int] = {}
        self.beams = [(0, 0.0, _NEG_INF)]  # (prefix id, log P(ends in blank), log P(ends in its last token))
        self.frames = 0
        self._blank_run: list[float] = []  # blank log-probs of frames where only blank passed, not yet applied
        self._seen: list[np.ndarray] = []

    def _apply_blank_run(self, beams: list) -> list:
        """Frames where only blank passes token_min_logp shift every beam equally: applied at once."""
        if not self._blank_run:
            return beams
        shift = float(np.sum(self._blank_run))
        return [(pid, _logaddexp(pb, pnb) + shift, _NEG_INF) for pid, pb, pnb in beams]

    def advance(self, log_probs) -> None:
        """Search the next frames (T, V) of the utterance."""
        dec = self.dec
        lp = np.asarray(log_probs, dtype=np.float64)
        if lp.ndim != 2 or (lp.size and lp.shape[1] != len(dec.labels)):
            raise ValueError(f"log_probs must be (T, {len(dec.labels)}), got {tuple(lp.shape)}")
        self._seen.append(lp)
        table, children, blank, width, prune = self.table, self.children, dec.blank, dec.beam_width, dec.beam_prune_logp
        lae, neg = _logaddexp, _NEG_INF
        mask = dec._candidates(lp)
        active = mask.any(axis=1)
        beams = self.beams
        for i in range(len(lp)):
            frame = lp[i]
            blank_lp = float(frame[blank])
            if not active[i]:
                self._blank_run.append(blank_lp)
                continue
            beams = self._apply_blank_run(beams)
            self._blank_run = []
            t = self.frames + i
            cands = [(c, float(frame[c])) for c in np.flatnonzero(mask[i]).tolist()]
            nxt: dict[int, list[float]] = {}
            for pid, pb, pnb in beams:
                total = lae(pb, pnb)
                e = nxt.get(pid)
                if e is None:
                    nxt[pid] = e = [total + blank_lp, neg]
                else:
                    e[0] = lae(e[0], total + blank_lp)
                last = table[pid].token
                for c, lpc in cands:
                    if c == last:
                        e[1] = lae(e[1], pnb + lpc)
                        if pb == neg:
                            continue
                        src = pb + lpc
                    else:
                        src = total + lpc
                    cid = children.get((pid, c))
                    if cid is None:
                        cid = children[(pid, c)] = len(table)
                        table.append(dec._child(table[pid], pid, c, t))
                    ce = nxt.get(cid)
                    if ce is None:
                        nxt[cid] = [neg, src]
                    else:
                        ce[1] = lae(ce[1], src)
            scored = [(lae(e0, e1) + table[pid].bonus, pid, e0, e1) for pid, (e0, e1) in nxt.items()]
            if len(scored) > width:
                scored = heapq.nlargest(width, scored)
            floor = max(scored)[0] + prune
            beams = [(pid, e0, e1) for s, pid, e0, e1 in scored if s >= floor]
        self.beams = beams
        self.frames += len(lp)

    def best(self, n: int = 1) -> list[Hypothesis]:
        """The `n` best hypotheses over the frames so far, by search score (the words in progress count as
        finished: what a partial transcript shows)."""
        return self.dec._hypotheses(self, n)

    def finals(self) -> list[_Final]:
        table = self.table
        return [_Final(pid, _logaddexp(pb, pnb), table[pid].lm_score, table[pid].lm_state, table[pid].word)
                for pid, pb, pnb in self._apply_blank_run(self.beams)]

    def trail(self, pid: int) -> list[tuple[int, int]]:
        out = []
        while pid > 0:
            p = self.table[pid]
            out.append((p.token, p.frame))
            pid = p.parent
        return out[::-1]

    def result(self, n: int = 1) -> list[Hypothesis]:
        """The `n` best at the end of the utterance, finalists rescored exactly over all its frames."""
        lp = np.concatenate(self._seen) if self._seen else np.zeros((0, len(self.dec.labels)))
        return self.dec._rescore(lp, self.best(max(n, RESCORED)), n)


def _nbest_of(shared: tuple["CTCBeamDecoder", int], item) -> list[Hypothesis]:
    decoder, n = shared
    return decoder.nbest(item, n)
