"""Decoders on log-probs whose truth is known (asr.controlled_logits): our beam search against pyctcdecode,
with each wrong transcript sorted into a search error (the truth scores higher) or a scoring error."""
import numpy as np
import pytest

from asr.controlled_logits import LABELS, controlled_logits, error_kinds, write_bigram_lm
from asr.decoding import CTCBeamDecoder
from asr.metrics import word_errors

ALPHA, BETA, BEAM = 1.0, 0.5, 100


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    d = tmp_path_factory.mktemp("controlled")
    return write_bigram_lm(d / "bigram.arpa"), write_bigram_lm(d / "no_hallo.arpa", drop=("hallo",))


def decoders(lm, **kw):
    pyctcdecode = pytest.importorskip("pyctcdecode")
    unigrams = [w for w in ("hello", "world", "hallo") if f"\t{w}\t" in lm.read_text()]
    ours = CTCBeamDecoder(LABELS, 0, str(lm), alpha=ALPHA, beta=BETA, beam_width=BEAM, **kw)
    theirs = pyctcdecode.build_ctcdecoder([""] + LABELS[1:], kenlm_model_path=str(lm), unigrams=unigrams,
                                          alpha=ALPHA, beta=BETA)
    return ours, lambda lp: theirs.decode_beams(lp, beam_width=BEAM)[0][0]


def test_controlled_logits_are_seeded_and_normalised():
    a, refs_a = controlled_logits(5, seed=3)
    b, refs_b = controlled_logits(5, seed=3)
    c, _ = controlled_logits(5, seed=4)
    assert refs_a == refs_b and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c))
    for lp, ref in zip(a, refs_a):
        assert lp.shape == (3 * len(ref), len(LABELS)) and len(ref.split()) == 4
        assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)


def test_score_is_what_the_search_ranks_by(lms):
    ours, _ = decoders(lms[0])
    items, _ = controlled_logits(20, seed=1)
    for lp in items:
        for hyp in ours.nbest(lp, 3):
            assert ours.score(lp, hyp.text) == pytest.approx(hyp.score, abs=1e-6)
    with pytest.raises(ValueError, match="outside the decoder's labels.*'z'"):
        ours.score(items[0], "hello zorld")


@pytest.mark.parametrize("seed", [1, 2])
def test_ours_beats_pyctcdecode_when_the_lm_knows_every_word(lms, seed):
    ours, theirs = decoders(lms[0])
    items, refs = controlled_logits(120, seed=seed)
    hyps_ours, hyps_theirs = [ours.decode(lp) for lp in items], [theirs(lp) for lp in items]
    mine, other = error_kinds(ours, items, refs, hyps_ours), error_kinds(ours, items, refs, hyps_theirs)
    print(f"seed {seed}: ours {mine}, pyctcdecode {other}")
    assert word_errors(refs, hyps_ours).rate <= word_errors(refs, hyps_theirs).rate
    assert mine.search_errors <= 0.02 * len(refs) and mine.search_errors < other.search_errors


def test_with_an_oov_truth_word_the_errors_are_the_scorings_not_the_searchs(lms):
    """'hallo' outside the LM: the objective itself prefers 'hello', so wrong transcripts are scoring errors;
    pyctcdecode's search errors sometimes land on the truth by luck, which is how it can look as good or better."""
    ours, theirs = decoders(lms[1])
    items, refs = controlled_logits(120, seed=5)
    mine = error_kinds(ours, items, refs, [ours.decode(lp) for lp in items])
    other = error_kinds(ours, items, refs, [theirs(lp) for lp in items])
    print(f"ours {mine}, pyctcdecode {other}")
    assert mine.scoring_errors >= 0.2 * len(refs)  # every sentence with hallo in it
    assert mine.search_errors <= 0.05 * len(refs) and mine.search_errors < other.search_errors


def test_decoders_sharing_an_lm_see_its_states_dropped(lms, monkeypatch):
    """with_options shares the KenLM model and its caches; when one copy drops the cached states (a long-running
    server passes the limit), the other's compiled caches must notice and not score with stale state ids."""
    import asr.lm

    base = CTCBeamDecoder(LABELS, 0, str(lms[0]), alpha=ALPHA, beta=BETA, beam_width=BEAM)
    other = base.with_options(alpha=0.5)
    items, _ = controlled_logits(6, seed=7)
    expected = [(base.decode(lp), other.decode(lp)) for lp in items]
    generation = base.lm.generation
    monkeypatch.setattr(asr.lm, "_MAX_CACHED_STATES", len(base.lm._states) - 1)  # the next start() drops them, once
    assert [(base.decode(lp), other.decode(lp)) for lp in items] == expected
    assert base.lm.generation == other.lm.generation > generation and base.lm is not other.lm
