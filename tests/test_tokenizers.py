"""SentencePiece units: round trips, storage in vocab.json and checkpoints, decoding with a word LM."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.decoding import CTCBeamDecoder
from asr.lm_build import build_lm
from asr.text import (
    WORD_START,
    CharVocabulary,
    OutOfVocabularyError,
    PieceVocabulary,
    build_vocabulary,
    load_vocabulary,
    normalize_text,
)
from conftest import ROOT, TINY, run_cli

PROMPTS = [normalize_text(x) for x in (ROOT / "recipes/synthetic_en/prompts.txt").read_text().splitlines()
           if x and not x.startswith("#")]


@pytest.fixture(scope="module")
def bpe() -> PieceVocabulary:
    return build_vocabulary(PROMPTS[:1500], "bpe", 200)


def test_bpe_round_trip_and_storage(bpe, tmp_path):
    assert bpe.labels[0] == "<blank>" and bpe.blank == 0 and len(bpe) >= 150
    for text in PROMPTS[1500:1700]:  # sentences the tokenizer never saw
        ids = bpe.encode(text)
        assert 0 not in ids and bpe.decode(ids) == text
        assert "".join(bpe.labels[i] for i in ids).replace(WORD_START, " ").strip() == text
    bpe.save(tmp_path / "vocab.json")
    again = load_vocabulary(tmp_path / "vocab.json")
    assert isinstance(again, PieceVocabulary) and again == bpe and again.encode("the man") == bpe.encode("the man")
    assert json.loads((tmp_path / "vocab.json").read_text())["type"] == "sentencepiece"
    CharVocabulary.build(["ab c"]).save(tmp_path / "chars.json")
    assert isinstance(load_vocabulary(tmp_path / "chars.json"), CharVocabulary)


def test_unigram_model_and_unknown_characters(bpe):
    uni = build_vocabulary(PROMPTS[:800], "unigram", 150)
    assert uni.decode(uni.encode("she stood on the left")) == "she stood on the left"
    with pytest.raises(OutOfVocabularyError, match="utt-7.*'é'"):
        bpe.encode("café au lait", "utt-7")
    with pytest.raises(ValueError, match="tokenizer must be"):
        build_vocabulary(PROMPTS[:10], "words")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(sorted({w for p in PROMPTS[:300] for w in p.split()})), min_size=1, max_size=12))
def test_any_sentence_of_known_words_round_trips(bpe, words):
    text = " ".join(words)
    assert bpe.decode(bpe.encode(text)) == text


def test_beam_search_with_pieces_and_word_lm(bpe, tmp_path):
    """Pieces spell 'the man' or 'them an' equally well; the word LM chooses, and '▁' starts words."""
    text = tmp_path / "lm.txt"
    text.write_text("the man walked\nthe man ran\nthe man sat\n")
    build_lm([text], tmp_path / "lm.arpa", order=3, engine="builtin")
    a, b = bpe.encode("the man"), bpe.encode("them an")
    assert a != b
    rows = []
    for ids_a, ids_b in zip(a + [None] * (len(b) - len(a)), b + [None] * (len(a) - len(b))):
        for ids in (ids_a, ids_b):
            row = np.full(len(bpe), -30.0)
            row[0] = -3.0
            for i in {ids_a, ids_b} - {None}:
                row[i] = np.log(0.45)
            rows.append(row)
            rows.append(np.where(np.arange(len(bpe)) == 0, 0.0, -30.0))
    lp = np.array(rows)
    lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    dec = CTCBeamDecoder(bpe.labels, lm_path=str(tmp_path / "lm.arpa"), alpha=1.0, beta=0.0, beam_width=32,
                         token_min_logp=-10.0, frame_seconds=0.03)
    hyp = dec.nbest(lp, 1)[0]
    assert hyp.text == "the man"
    assert [w["word"] for w in hyp.words] == ["the", "man"] and hyp.words[0]["end_frame"] < hyp.words[1]["start_frame"]


def test_hotword_boosting(bpe):
    """Equal acoustic evidence for 'cat' and 'cut': the hotword wins."""
    labels = ["<blank>", " ", "a", "c", "t", "u"]
    frames = [{3: 0.0}, {2: np.log(0.5), 5: np.log(0.5)}, {4: 0.0}]
    lp = np.full((len(frames), len(labels)), -20.0)
    for t, f in enumerate(frames):
        for c, v in f.items():
            lp[t, c] = v
    for hot in ("cat", "cut"):
        dec = CTCBeamDecoder(labels, beam_width=8, hotwords=[hot], hotword_weight=5.0)
        assert dec.decode(lp) == hot
    for hot, text in ((["cat:2", "cut:6"], "cut"), (["cat:6", "cut:2"], "cat")):  # each hotword its own bonus
        dec = CTCBeamDecoder(labels, beam_width=8, hotwords=hot, hotword_weight=5.0)
        assert dec.decode(lp) == text and dec.with_options(hotwords=["cut"]).decode(lp) == "cut"
    with pytest.raises(ValueError, match="'cat:x'.*must be a number"):
        CTCBeamDecoder(labels, hotwords=["cat:x"])


def test_train_and_decode_with_bpe_through_the_cli(corpus, tmp_path):
    exp = tmp_path / "exp"
    proc = run_cli("train", str(ROOT / "conf/ds2_tiny.yaml"), f"exp_dir={exp}", f"data.train_manifest={corpus['train']}",
                   f"data.dev_manifest={corpus['dev']}", "data.tokenizer=bpe", "data.vocab_size=40", "train.epochs=1",
                   *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    vocab = json.loads((exp / "vocab.json").read_text())
    assert vocab["type"] == "sentencepiece" and any(x.startswith(WORD_START) for x in vocab["labels"])
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(json.loads(x)["text"] for x in corpus["train"].read_text().splitlines()) + "\n")
    build_lm([text], tmp_path / "lm.arpa", order=2, engine="builtin")
    proc = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(corpus["dev"]), "--lm",
                   str(tmp_path / "lm.arpa"), "--beam", "8", "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["decoder"] == "beam8+lm" and result["utterances"] == 6 and 0.0 <= result["cer"]
