"""Prefix beam search: exhaustive checks on small cases, and KenLM fusion with a real ARPA model."""
import itertools
import math

import numpy as np
import pytest
import torch

from asr.ctc import ctc_loss
from asr.decoding import CTCBeamDecoder, greedy_ids

LABELS = ["<blank>", " ", "a", "b"]


def labeling_logp(lp: np.ndarray, ids: list[int]) -> float:
    """log P(labeling) summed over all its alignments (our CTC loss, itself checked against torch)."""
    t = torch.from_numpy(lp)
    return -ctc_loss(t, torch.tensor(ids, dtype=torch.long), lp.shape[0], len(ids), reduction="none").item()


def best_labeling_by_enumeration(lp: np.ndarray) -> tuple[int, ...]:
    T, V = lp.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        lab = tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))
        totals[lab] = np.logaddexp(totals.get(lab, -np.inf), sum(lp[i, c] for i, c in enumerate(path)))
    return max(totals, key=totals.get)


@pytest.mark.parametrize("seed", range(8))
def test_beam_finds_most_probable_labeling(seed):
    rng = np.random.default_rng(seed)
    lp = torch.from_numpy(rng.normal(size=(6, 4)) * 2).log_softmax(-1).numpy()
    dec = CTCBeamDecoder(LABELS, beam_width=64, token_min_logp=-50, beam_prune_logp=-50)
    hyp = dec.nbest(lp, 1)[0]
    best = best_labeling_by_enumeration(lp)
    ours = [LABELS.index(c) for c in " ".join(hyp.text.split())] if hyp.text else []
    assert labeling_logp(lp, ours) == pytest.approx(labeling_logp(lp, list(best)), abs=1e-9) or \
        " ".join("".join(LABELS[i] for i in best).split()) == hyp.text


@pytest.mark.parametrize("seed", range(10))
def test_beam_never_worse_than_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    lp = torch.from_numpy(rng.normal(size=(30, 4)) * 3).log_softmax(-1).numpy()
    greedy = greedy_ids(torch.from_numpy(lp)[None], torch.tensor([30]))[0]
    hyp = CTCBeamDecoder(LABELS, beam_width=16).nbest(lp, 1)[0]
    ids = [LABELS.index(c) for c in hyp.text]
    # compare labelings with the same spacing convention: text drops leading/trailing/double spaces
    g_text = " ".join("".join(LABELS[i] for i in greedy).split())
    assert labeling_logp(lp, ids) >= labeling_logp(lp, [LABELS.index(c) for c in g_text]) - 1e-9


def test_word_timestamps():
    frames = [2, 2, 0, 3, 1, 1, 3, 0]  # "ab" then space then "b"
    lp = np.full((len(frames), 4), -20.0)
    lp[np.arange(len(frames)), frames] = 0.0
    hyp = CTCBeamDecoder(LABELS, beam_width=4, frame_seconds=0.02).nbest(lp, 1)[0]
    assert hyp.text == "ab b"
    assert [(w["word"], w["start_frame"], w["end_frame"]) for w in hyp.words] == [("ab", 0, 3), ("b", 6, 6)]
    assert hyp.words[1]["start"] == pytest.approx(0.12) and hyp.words[1]["end"] == pytest.approx(0.14)


ARPA = """\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1.0\t<s>\t-0.3
-0.7\t</s>
-0.5\tab\t-0.3
-3.0\tba\t-0.3
-1.5\t<unk>

\\2-grams:
-0.2\t<s> ab
-0.2\tab </s>
-2.5\t<s> ba
-1.0\tba </s>

\\end\\
"""


def test_lm_fusion_prefers_lm_words(tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(ARPA)
    # acoustically "ba" (0.33) is ahead of "a" (0.27), "b" (0.22) and "ab" (0.18)
    lp = np.log(np.array([[1e-9, 1e-9, 0.45, 0.55], [1e-9, 1e-9, 0.6, 0.4]]))
    assert CTCBeamDecoder(LABELS, beam_width=10).decode(lp) == "ba"
    with_lm = CTCBeamDecoder(LABELS, beam_width=10, lm_path=str(arpa), alpha=0.5, beta=0.0)
    hyp = with_lm.nbest(lp, 1)[0]
    assert hyp.text == "ab"
    # LM part: alpha * ln10 * (log10 p(ab|<s>) + log10 p(</s>|ab))
    assert hyp.lm_score == pytest.approx(0.5 * math.log(10) * (-0.2 - 0.2), abs=1e-4)


def test_decoding_options_hold_every_default_once():
    import dataclasses

    from asr.decoding import DecodingOptions

    d = DecodingOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.alpha = 1.0
    with pytest.raises(ValueError, match="beam_width"):
        DecodingOptions(beam_width=0)
    assert DecodingOptions(hotwords="queen").hotwords == ("queen",)  # one hotword, not five letters
    dec = CTCBeamDecoder(LABELS, options=DecodingOptions(beam_width=7), alpha=0.25)
    assert dec.options == dataclasses.replace(d, beam_width=7, alpha=0.25) and dec.beam_width == 7
    other = dec.with_options(beam_width=3, beta=None)  # None keeps the value
    assert other.options.beam_width == 3 and other.options.beta == d.beta and dec.beam_width == 7
    with pytest.raises(ValueError, match="cannot change"):
        dec.with_options(token_min_logp=-3.0)
    dec.reset_params(alpha=2.0)
    assert dec.options.alpha == 2.0 and dec.options.beta == d.beta
    from conftest import run_cli

    helps = " ".join(run_cli("transcribe", "--help").stdout.split())  # argparse wraps lines
    assert f"else {d.alpha:g})" in helps and f"{d.beam_width} with --lm" in helps and f"default {d.hotword_weight:g}" in helps
