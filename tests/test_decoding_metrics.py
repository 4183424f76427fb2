import jiwer
import pytest
import torch

from asr.decoding import greedy_decode, greedy_ids
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
