import jiwer
import numpy as np
import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from asr.decoding import best_path, greedy_decode, greedy_ids
from asr.metrics import alignment, score
from asr.text import CharVocabulary


def one_hot(ids, classes=5):
    lp = torch.full((len(ids), classes), -10.0)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    return lp


def test_greedy_collapses_repeats_and_drops_blanks():
    lp = torch.stack([one_hot([1, 1, 0, 1, 2, 2, 0, 0]), one_hot([0, 3, 3, 3, 0, 0, 4, 4])])
    assert greedy_ids(lp, torch.tensor([8, 8])) == [[1, 1, 2], [3, 4]]
    assert greedy_ids(lp, torch.tensor([3, 5])) == [[1], [3]]  # frames past the length are ignored


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40), st.integers(0, 3), st.integers(-1, 3), st.integers(0, 40))
def test_best_path_is_the_collapsed_argmax_in_any_chunking(frames, blank, previous, cut):
    """The one greedy decoder: a plain loop's tokens and frames, and the same in two chunks of a stream."""
    want, prev = [], previous
    for t, c in enumerate(frames):
        if c != prev and c != blank:
            want.append(t)
        prev = c
    ids = np.array(frames, dtype=np.int64)
    assert best_path(ids, blank, previous).tolist() == want
    cut = min(cut, len(frames))
    first = best_path(ids[:cut], blank, previous)
    second = best_path(ids[cut:], blank, frames[cut - 1] if cut else previous) + cut
    assert np.concatenate([first, second]).tolist() == want


def test_greedy_decode_text():
    vocab = CharVocabulary.build(["ab"])  # blank, space, a, b
    lp = one_hot([2, 0, 1, 1, 3, 3, 0], classes=4)[None]
    assert greedy_decode(lp, torch.tensor([7]), vocab) == ["a b"]


def test_score_matches_jiwer():
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the cat sat on mat", "hello there world", "a x c d e"]
    r = score(refs, hyps)
    assert r["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert r["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert r["word_errors"] == {"substitutions": 1, "deletions": 1, "insertions": 2, "hits": 10}


def test_score_empty_sides():
    r = score(["hello world", ""], ["", "oops"])
    assert r["word_errors"]["deletions"] == 2 and r["word_errors"]["insertions"] == 1
    assert r["wer"] == pytest.approx(1.5)


def test_alignment_ops():
    ops = [(c["op"], c["ref"], c["hyp"]) for c in alignment("the cat sat", "the bat sat down")]
    assert ops == [("equal", "the", "the"), ("substitute", "cat", "bat"), ("equal", "sat", "sat"), ("insert", "", "down")]
