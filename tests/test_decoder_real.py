"""The beam search on real model outputs with a real KenLM model, against greedy and pyctcdecode.

tests/data/synthetic_en_logprobs.npz holds the log-probs of a model trained by the default recipe
on 120 test utterances (held-out voices and sentences); the LM is built here from the recipe's
training sentences (scripts/make_decoder_fixture.py made both).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.ctc import ctc_loss
from asr.decoding import CTCBeamDecoder, greedy_ids
from asr.lm_build import build_lm
from asr.metrics import word_errors

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def outputs():
    z = np.load(DATA / "synthetic_en_logprobs.npz")
    bounds = np.concatenate([[0], np.cumsum(z["lengths"])])
    lps = [z["log_probs"][a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:])]
    return lps, [str(r) for r in z["refs"]], json.loads(str(z["labels"]))


@pytest.fixture(scope="module")
def lm4(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "4gram.arpa"
    build_lm([DATA / "synthetic_en_lm_text.txt"], out, order=4, engine="builtin")
    return out


def labeling_logp(lp: np.ndarray, ids: list[int]) -> float:
    """Exact log P(labeling | log-probs), over all alignments."""
    if not ids:
        return float(lp[:, 0].sum())
    t = torch.from_numpy(lp.astype(np.float64))
    return -ctc_loss(t, torch.tensor(ids), lp.shape[0], len(ids), reduction="none").item()


def test_beam_without_lm_never_worse_than_greedy(outputs):
    lps, _, labels = outputs
    dec = CTCBeamDecoder(labels, beam_width=32)
    worse = 0
    for lp in lps:
        greedy = greedy_ids(torch.from_numpy(lp)[None], torch.tensor([len(lp)]))[0]
        hyp = dec.nbest(lp, 1)[0]
        worse += labeling_logp(lp, hyp.tokens) < labeling_logp(lp, greedy) - 1e-6
    assert worse == 0


def test_beam_width_one_is_greedy(outputs):
    lps, _, labels = outputs
    dec = CTCBeamDecoder(labels, beam_width=1)
    lengths = torch.tensor([len(lp) for lp in lps])
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(lp) for lp in lps], batch_first=True)
    greedy = [" ".join("".join(labels[i] for i in ids).split()) for ids in greedy_ids(padded, lengths)]
    assert [dec.decode(lp) for lp in lps] == greedy
    assert dec.decode_batch(padded, lengths, processes=2) == greedy


def test_lm_cuts_wer_by_a_fifth(outputs, lm4):
    lps, refs, labels = outputs
    greedy = CTCBeamDecoder(labels, beam_width=1)
    fused = CTCBeamDecoder(labels, lm_path=str(lm4), alpha=0.5, beta=1.0, beam_width=64)
    wer_greedy = word_errors(refs, [greedy.decode(lp) for lp in lps]).rate
    wer_lm = word_errors(refs, fused.decode_batch(np.stack([np.pad(lp, ((0, 200 - len(lp)), (0, 0))) for lp in lps]),
                                                  [len(lp) for lp in lps])).rate
    assert wer_lm <= 0.8 * wer_greedy, (wer_greedy, wer_lm)


def test_compiled_and_python_engines_agree_on_real_outputs(outputs, lm4):
    lps, _, labels = outputs
    kw = dict(lm_path=str(lm4), alpha=0.8, beta=1.5, beam_width=24, frame_seconds=0.03)
    fast, slow = CTCBeamDecoder(labels, engine="compiled", **kw), CTCBeamDecoder(labels, engine="python", **kw)
    for lp in lps[:40]:
        a, b = fast.nbest(lp, 3), slow.nbest(lp, 3)
        assert [h.text for h in a] == [h.text for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-9)
        assert a[0].words == b[0].words and a[0].tokens == b[0].tokens


def test_agrees_with_pyctcdecode(outputs, lm4):
    pyctcdecode = pytest.importorskip("pyctcdecode")
    lps, refs, labels = outputs
    alpha, beta, beam = 0.5, 1.0, 100
    ours = CTCBeamDecoder(labels, lm_path=str(lm4), alpha=alpha, beta=beta, beam_width=beam, token_min_logp=-5.0,
                          beam_prune_logp=-10.0)
    unigrams = (lm4.with_suffix(".unigrams.txt")).read_text().split()
    theirs = pyctcdecode.build_ctcdecoder([""] + labels[1:], kenlm_model_path=str(lm4), unigrams=unigrams,
                                          alpha=alpha, beta=beta, unk_score_offset=-10.0)

    def top(lp):  # the plain beam search; pyctcdecode's decode() also prunes by LM history
        return theirs.decode_beams(lp, beam_width=beam, token_min_logp=-5.0, beam_prune_logp=-10.0)[0][0]

    same, lower = 0, []
    for lp in lps:
        a = ours.decode(lp)
        b = top(lp)
        if a == b:
            same += 1
        elif ours.score(lp, a) < ours.score(lp, b) - 1e-6:  # ours found the lower objective
            lower.append((a, b))
    rate = same / len(lps)
    print(f"agreement with pyctcdecode: {same}/{len(lps)} = {100 * rate:.1f}%")
    assert rate >= 0.85 and not lower, (rate, lower)
    wer_ours = word_errors(refs, [ours.decode(lp) for lp in lps]).rate
    wer_theirs = word_errors(refs, [top(lp) for lp in lps]).rate
    assert wer_ours <= wer_theirs + 1e-9


# ---------------------------------------------------------------- property test: the two engines
CHARS = ["<blank>", " ", "a", "b", "c", "'"]
PIECES = ["<blank>", "\u2581a", "\u2581b", "a", "b", "\u2581", "c"]
ARPA_WORDS = ["a", "b", "ab", "ba", "abc", "c"]


@pytest.fixture(scope="module")
def small_lm(tmp_path_factory):
    text = tmp_path_factory.mktemp("small") / "text.txt"
    text.write_text("a b ab\nab ba abc\nc a b\nba ba c\nabc ab a\n")
    out = text.with_name("lm.arpa")
    build_lm([text], out, order=3, engine="builtin")
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(0, 25), beam=st.integers(1, 12), pieces=st.booleans(),
       use_lm=st.booleans(), min_logp=st.sampled_from([-3.0, -8.0, -50.0]))
def test_engines_identical(small_lm, seed, t, beam, pieces, use_lm, min_logp):
    labels = PIECES if pieces else CHARS
    rng = np.random.default_rng(seed)
    lp = torch.from_numpy(rng.normal(size=(t, len(labels))) * 3).log_softmax(-1).numpy()
    kw = dict(lm_path=str(small_lm) if use_lm else None, alpha=0.7, beta=0.5, beam_width=beam,
              token_min_logp=min_logp, beam_prune_logp=-15.0)
    a = CTCBeamDecoder(labels, engine="compiled", **kw).nbest(lp, 4)
    b = CTCBeamDecoder(labels, engine="python", **kw).nbest(lp, 4)
    assert [h.text for h in a] == [h.text for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-9)
    assert all(math.isfinite(h.score) for h in a)


@settings(max_examples=8, deadline=None)
@given(first=st.integers(0, 100), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_streamed_search_equals_the_whole_utterance_search(outputs, lm4, first, cuts):
    """The beam search fed a few frames at a time (as a stream gives them) ends where the one-shot search does,
    and the partial result after the last frames is the search's own best."""
    lps, _, labels = outputs
    dec = CTCBeamDecoder(labels, lm_path=str(lm4), alpha=0.75, beta=-1.0, beam_width=32, engine="python")
    for lp in lps[first: first + 3]:
        search, pos, i, partials = dec.stream(), 0, 0, []
        while pos < len(lp):
            search.advance(lp[pos: pos + cuts[i % len(cuts)]])
            partials.append(search.best(1)[0].text)
            pos, i = pos + cuts[i % len(cuts)], i + 1
        whole = dec.nbest(lp, 3)
        streamed = search.result(3)
        assert [h.text for h in streamed] == [h.text for h in whole]
        assert [h.score for h in streamed] == pytest.approx([h.score for h in whole], abs=1e-6)
        assert search.frames == len(lp)
        whole = dec.stream()
        whole.advance(lp)
        assert partials[-1] == whole.best(1)[0].text  # the last partial: the search's own best, unrescored
        assert all(p for p in partials[len(partials) // 2:])  # something to show once half the audio is in


def test_compiled_engine_grows_its_prefix_table_mid_utterance(outputs, lm4):
    """A table far too small for the search: the kernel stops before the frame, the table doubles, the frame is
    searched again; the result is the Python engine's, to the last score."""
    from asr import beam_kernel
    from asr.decoding import _Compiled

    lps, _, labels = outputs
    kw = dict(lm_path=str(lm4), alpha=0.6, beta=1.0, beam_width=32)
    fast, slow = CTCBeamDecoder(labels, engine="compiled", **kw), CTCBeamDecoder(labels, engine="python", **kw)
    fast._compiled = _Compiled(fast)
    fast._compiled.table = beam_kernel.PrefixTable(capacity=8)
    for lp in lps[:6]:
        a, b = fast.nbest(lp, 3), slow.nbest(lp, 3)
        assert [h.text for h in a] == [h.text for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-9)
    assert len(fast._compiled.table.arrays["parent"]) >= 1024  # it grew, many times over
