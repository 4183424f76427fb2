import pytest

from asr.text import CharVocabulary, OutOfVocabularyError, check_vocabulary, normalize_text


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("It's 3 o'clock", "it's three o'clock"),
    ("The 21st of May, 1,250 people", "the twenty first of may one thousand two hundred and fifty people"),
    ("“Quoted” — text-with-hyphens", "quoted text with hyphens"),
    ("  'tis   the\tseason ", "tis the season"),
    ("Café NOËL", "café noël"),
    ("", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_is_idempotent():
    s = normalize_text("Dr. Smith's 2 cats, 3.5 kg!")
    assert normalize_text(s) == s


def test_vocabulary_blank_first_space_separator():
    v = CharVocabulary.build(["hello world", "it's"])
    assert v.labels[0] == "<blank>" and v.blank == 0
    assert v.labels[1] == " " and v.labels[2] == "'"
    assert v.decode(v.encode("hello world")) == "hello world"


def test_vocabulary_error_names_characters_and_utterance():
    v = CharVocabulary.build(["abc"])
    with pytest.raises(OutOfVocabularyError) as e:
        v.encode("abz!", utt_id="utt7")
    assert "utt7" in str(e.value) and "'z'" in str(e.value) and "'!'" in str(e.value)


def test_check_vocabulary_lists_all_bad_utterances():
    v = CharVocabulary.build(["abc"])
    with pytest.raises(OutOfVocabularyError) as e:
        check_vocabulary(v, [("u1", "abc"), ("u2", "abd"), ("u3", "xbc")])
    msg = str(e.value)
    assert "2 utterance(s)" in msg and "u2" in msg and "u3" in msg and "u1:" not in msg


def test_vocabulary_save_load(tmp_path):
    v = CharVocabulary.build(["zebra crossing"])
    v.save(tmp_path / "v.json")
    assert CharVocabulary.load(tmp_path / "v.json") == v


def test_vocabulary_requires_space():
    with pytest.raises(ValueError):
        CharVocabulary(["a", "b"])
