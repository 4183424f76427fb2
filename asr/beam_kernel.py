"""The compiled loop of the CTC prefix beam search (numba); `asr.decoding.CTCBeamDecoder` is the API.

Prefixes live in a growing table (parent, last token, position of the word in progress in a
character trie of the LM's words, fused LM score, LM state). KenLM itself cannot be called from
compiled code, so word scores come from a cache keyed by (LM state, word id); on a miss the
kernel stops before committing the frame, lists the missing (state, word) pairs, and the Python
side asks KenLM and calls again. The cache outlives utterances, so misses soon become rare.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.typed import Dict

NEG_INF = -math.inf
DONE, NEED_LM, FULL = 0, 1, 2
AVG_WORD_LEN = 6.0


def new_cache() -> tuple[Dict, Dict]:
    """Empty (score, next state) caches keyed by state * n_words + word."""
    return (Dict.empty(key_type=types.int64, value_type=types.float64),
            Dict.empty(key_type=types.int64, value_type=types.int64))


def new_trie() -> Dict:
    """Empty character trie: node * n_chars + char -> child node."""
    return Dict.empty(key_type=types.int64, value_type=types.int64)


class PrefixTable:
    """Growable arrays of prefixes; row 0 is the empty prefix."""

    FIELDS = {"parent": np.int32, "token": np.int32, "node": np.int64, "wlen": np.int32, "lm": np.float64,
              "state": np.int64, "bonus": np.float64, "frame": np.int32, "child": np.int32, "sibling": np.int32,
              "pending": np.bool_, "slot": np.int32}

    def __init__(self, capacity: int = 4096):
        self.arrays = {k: np.zeros(capacity, dtype=t) for k, t in self.FIELDS.items()}
        self.arrays["slot"][:] = -1  # the kernel leaves every slot at -1 when it returns

    def reset(self, start_state: int) -> None:
        a = self.arrays
        a["parent"][0], a["token"][0], a["node"][0], a["wlen"][0] = -1, -1, 0, 0
        a["lm"][0], a["state"][0], a["bonus"][0], a["frame"][0] = 0.0, start_state, 0.0, -1
        a["child"][0], a["sibling"][0], a["pending"][0] = -1, -1, False

    def grow(self) -> None:
        for k, v in self.arrays.items():
            bigger = np.zeros(2 * len(v), dtype=v.dtype)
            bigger[: len(v)] = v
            if k == "slot":
                bigger[len(v):] = -1
            self.arrays[k] = bigger

    def as_tuple(self) -> tuple:
        return tuple(self.arrays[k] for k in self.FIELDS)


@numba.njit(cache=True, inline="always")
def logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for scalars, -inf aware."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@numba.njit(cache=True)
def _walk(trie, node, n_chars, chars, lo, hi):
    for i in range(lo, hi):
        key = node * n_chars + chars[i]
        if key not in trie:
            return -1
        node = trie[key]
    return node


@numba.njit(cache=True)
def search(lp, frames, cand_ptr, cand_tok, cumblank, blank, width, prune,
           boundary, tok_ptr, tok_chars,
           has_lm, use_trie, alpha, beta, unk_partial, trie, n_chars, node_word, n_words, unk_word,
           cache_score, cache_next,
           parent, token, node, wlen, lmsc, state, bonus, frame, child, sibling, pending, slot,
           n_prefix, beams_pid, beams_pb, beams_pnb, pos, req_state, req_word,
           nxt_pid, nxt_pb, nxt_pnb, scores):
    """Run frames[pos[0]:] (pos = [next frame index, first frame not yet shifted by blank, n_beams]).

    Returns (status, n_prefix, n_requests). NEED_LM: req_* hold the missing (state, word) pairs.
    FULL: the prefix table is full. Either way the frame at pos[0] was not committed.
    """
    cap = parent.shape[0]
    n_beams = pos[2]
    while pos[0] < frames.shape[0]:
        t = frames[pos[0]]
        shift = cumblank[t] - cumblank[pos[1]]
        blank_lp = lp[t, blank]
        n_next = 0
        n_req = 0
        for b in range(n_beams):
            pid = beams_pid[b]
            pb = beams_pb[b]
            pnb = beams_pnb[b]
            if t > pos[1]:  # blank-only frames since the last step: the path now ends in blank
                pb = logaddexp(pb, pnb) + shift
                pnb = NEG_INF
            total = logaddexp(pb, pnb)
            s = slot[pid]
            if s < 0:
                s = n_next
                slot[pid] = s
                nxt_pid[s] = pid
                nxt_pb[s] = total + blank_lp
                nxt_pnb[s] = NEG_INF
                n_next += 1
            else:
                nxt_pb[s] = logaddexp(nxt_pb[s], total + blank_lp)
            last = token[pid]
            for k in range(cand_ptr[t], cand_ptr[t + 1]):
                c = cand_tok[k]
                lpc = lp[t, c]
                if c == last:
                    nxt_pnb[s] = logaddexp(nxt_pnb[s], pnb + lpc)
                    if pb == NEG_INF:
                        continue
                    src = pb + lpc
                else:
                    src = total + lpc
                # find or make the child (pid, c)
                cid = child[pid]
                while cid >= 0 and token[cid] != c:
                    cid = sibling[cid]
                if cid < 0:
                    if n_prefix >= cap:
                        for i in range(n_next):
                            slot[nxt_pid[i]] = -1
                        return FULL, n_prefix, 0
                    cid = n_prefix
                    n_prefix += 1
                    parent[cid] = pid
                    token[cid] = c
                    frame[cid] = t
                    child[cid] = -1
                    sibling[cid] = child[pid]
                    child[pid] = cid
                    slot[cid] = -1
                    pending[cid] = True
                if pending[cid]:
                    # the scoring of a new prefix: word boundary, word in progress, LM
                    sc = lmsc[pid]
                    st = state[pid]
                    ok = True
                    if boundary[c]:
                        if has_lm and wlen[pid] > 0:
                            w = node_word[node[pid]] if node[pid] >= 0 else -1
                            if w < 0:
                                w = unk_word
                            key = st * n_words + w
                            if key in cache_score:
                                sc += alpha * cache_score[key] + beta
                                st = cache_next[key]
                            else:
                                ok = False
                                dup = False
                                for r in range(n_req):
                                    if req_state[r] == st and req_word[r] == w:
                                        dup = True
                                if not dup and n_req < req_state.shape[0]:
                                    req_state[n_req] = st
                                    req_word[n_req] = w
                                    n_req += 1
                        nd = _walk(trie, 0, n_chars, tok_chars, tok_ptr[c], tok_ptr[c + 1]) if use_trie else 0
                        wl = tok_ptr[c + 1] - tok_ptr[c]
                    else:
                        nd = _walk(trie, node[pid], n_chars, tok_chars, tok_ptr[c], tok_ptr[c + 1]) if use_trie else 0
                        wl = wlen[pid] + tok_ptr[c + 1] - tok_ptr[c]
                    if ok:
                        node[cid] = nd
                        wlen[cid] = wl
                        lmsc[cid] = sc
                        state[cid] = st
                        pen = 0.0
                        if has_lm and use_trie and wl > 0 and nd < 0:
                            pen = unk_partial * (wl / AVG_WORD_LEN if wl > AVG_WORD_LEN else 1.0)
                        bonus[cid] = sc + pen
                        pending[cid] = False
                cs = slot[cid]
                if cs < 0:
                    cs = n_next
                    slot[cid] = cs
                    nxt_pid[cs] = cid
                    nxt_pb[cs] = NEG_INF
                    nxt_pnb[cs] = src
                    n_next += 1
                else:
                    nxt_pnb[cs] = logaddexp(nxt_pnb[cs], src)
        for i in range(n_next):
            slot[nxt_pid[i]] = -1
        if n_req > 0:
            return NEED_LM, n_prefix, n_req
        # rank by acoustic + LM, keep the best `width` within `prune` of the best
        best = NEG_INF
        for i in range(n_next):
            scores[i] = logaddexp(nxt_pb[i], nxt_pnb[i]) + bonus[nxt_pid[i]]
            if scores[i] > best:
                best = scores[i]
        floor = best + prune
        if n_next > width:
            kth = np.partition(scores[:n_next], n_next - width)[n_next - width]
            if kth > floor:
                floor = kth
        kept = 0
        for i in range(n_next):
            if kept < width and scores[i] >= floor:
                beams_pid[kept] = nxt_pid[i]
                beams_pb[kept] = nxt_pb[i]
                beams_pnb[kept] = nxt_pnb[i]
                kept += 1
        n_beams = kept
        pos[2] = kept
        pos[1] = t + 1
        pos[0] += 1
    return DONE, n_prefix, 0


@numba.njit(cache=True)
def build_trie(chars, offsets, n_chars, trie, node_word):
    """Insert words (char ids chars[offsets[i]:offsets[i+1]]) into `trie`; node_word[node] = word index.

    Returns the number of nodes; node_word must have room for len(chars) + 1 nodes.
    """
    n_nodes = 1
    for w in range(offsets.shape[0] - 1):
        node = 0
        for i in range(offsets[w], offsets[w + 1]):
            key = node * n_chars + chars[i]
            if key in trie:
                nxt = trie[key]
            else:
                nxt = n_nodes
                n_nodes += 1
                trie[key] = nxt
            node = nxt
        if node_word[node] < 0:
            node_word[node] = w
    return n_nodes


@numba.njit(cache=True)
def labeling_logp(lp, labels, blank):
    """Exact log P(labeling | lp) summed over all CTC alignments.

    Forward algorithm in probability space, each frame shifted by its best log-prob before exp
    and the column renormalised, with the log scale factors summed (Graves 2012, 7.3.1).
    """
    t_len = lp.shape[0]
    s_len = 2 * labels.shape[0] + 1
    if t_len == 0:
        return 0.0 if labels.shape[0] == 0 else NEG_INF
    ext = np.full(s_len, blank, dtype=np.int64)
    for i in range(labels.shape[0]):
        ext[2 * i + 1] = labels[i]
    skip = np.zeros(s_len, dtype=np.bool_)
    for s in range(2, s_len):
        skip[s] = ext[s] != blank and ext[s] != ext[s - 2]
    alpha = np.zeros(s_len)
    prev = np.zeros(s_len)
    e = np.empty(s_len)
    log_scale = 0.0
    for t in range(t_len):
        m = lp[t, 0]
        for c in range(1, lp.shape[1]):
            if lp[t, c] > m:
                m = lp[t, c]
        lo = max(0, s_len - 2 * (t_len - t))
        hi = min(s_len, 2 * t + 2)
        for s in range(lo, hi):
            e[s] = math.exp(lp[t, ext[s]] - m)
        total = 0.0
        for s in range(s_len):
            if s < lo or s >= hi:
                alpha[s] = 0.0
                continue
            if t == 0:
                a = 1.0
            else:
                a = prev[s]
                if s >= 1:
                    a += prev[s - 1]
                if skip[s]:
                    a += prev[s - 2]
            alpha[s] = a * e[s]
            total += alpha[s]
        if total == 0.0:
            return NEG_INF
        log_scale += m + math.log(total)
        for s in range(s_len):
            alpha[s] /= total
        prev, alpha = alpha, prev
    end = prev[s_len - 1] + (prev[s_len - 2] if s_len > 1 else 0.0)
    return log_scale + math.log(end) if end > 0.0 else NEG_INF


@numba.njit(cache=True)
def trace(parent, token, frame, pid, out):
    """Write the tokens and frames of prefix `pid`, newest first, into out[0], out[1]; return their count."""
    n = 0
    while pid > 0:
        out[0, n] = token[pid]
        out[1, n] = frame[pid]
        n += 1
        pid = parent[pid]
    return n
