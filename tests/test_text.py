from pathlib import Path

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


def test_english_text_from_debian_packages_is_normalised_and_leaves_out_held_out_sentences(tmp_path):
    from asr.english_text import english_sentences, fortunes

    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "wisdom").write_text("Look before you leap.  He who hesitates\nis lost!\n\t\t-- Anon\n%\n"
                                   "It costs 25 dollars. Short.\n%\n")
    (folder / "wisdom.dat").write_bytes(b"\0\1binary index")
    assert [s.strip() for s in fortunes(folder) if s.strip()] == [
        "Look before you leap.", "He who hesitates is lost!", "It costs 25 dollars.", "Short."]  # no "-- Anon"
    if not Path("/usr/share/games/fortunes/wisdom").exists():
        pytest.skip("Debian's fortunes are not installed")
    sentences = english_sentences(["fortunes"])
    assert len(sentences) > 10000 and len(set(sentences)) == len(sentences)
    assert all(s == normalize_text(s) and 3 <= len(s.split()) <= 30 for s in sentences)
    held_out = sentences[:50]
    assert not set(english_sentences(["fortunes"], exclude=[s.upper() + "!" for s in held_out])) & set(held_out)
    with pytest.raises(ValueError, match="unknown text sources"):
        english_sentences(["gutenberg"])


def test_gcide_quotations_are_the_cited_block_quotes(tmp_path):
    import gzip

    from asr.english_text import gcide_quotations

    entry = ("Abhor \\Ab*hor\"\\, v. t.\n   To hate extremely. \"At a blow\". --Shak.\n   [1913 Webster]\n\n"
             "            It doth abhor me now I speak the word. --Shak.\n      [1913 Webster]\n\n"
             "            I utterly abhor, yea, from my soul\n            Refuse you for my judge.     --Shak.\n\n"
             "            An indented line with no citation.\n")
    path = tmp_path / "gcide.dict.dz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(entry)
    assert list(gcide_quotations(path)) == ["It doth abhor me now I speak the word.",
                                            "I utterly abhor, yea, from my soul Refuse you for my judge."]
    assert list(gcide_quotations(tmp_path / "missing.dict.dz")) == []


def test_a_failing_bible_program_is_named_with_its_error(tmp_path):
    from asr.english_text import kjv_clauses

    program = tmp_path / "bible"
    program.write_text("#!/bin/sh\necho 'bible: cannot open /usr/lib/bible.data' >&2\nexit 2\n")
    program.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"bible could not print .*exit 2.*cannot open /usr/lib/bible.data"):
        list(kjv_clauses(str(program)))
    assert list(kjv_clauses(str(tmp_path / "no-such-program"))) == []


def test_a_source_that_gives_nothing_is_reported(tmp_path, monkeypatch, caplog):
    from asr.english_text import english_sentences

    monkeypatch.setenv("PATH", str(tmp_path))  # no bible program to be found
    assert english_sentences(["kjv"]) == []
    assert "'kjv' gave no sentences: is Debian's bible-kjv installed?" in caplog.text


def test_bible_and_dictionary_text_from_debian_packages():
    from asr.english_text import GCIDE, english_sentences

    if not GCIDE.exists() or not Path("/usr/bin/bible").exists():
        pytest.skip("Debian's bible-kjv and dict-gcide are not installed")
    kjv = english_sentences(["kjv"])
    assert len(kjv) > 40000 and "in the beginning god created the heaven and the earth" in kjv
    assert not any(w.isdigit() or w in ("genesis", "revelation") for w in kjv[0].split())  # no verse numbers, headings
    gcide = english_sentences(["gcide"])
    assert len(gcide) > 30000 and "it doth abhor me now i speak the word" in gcide
    assert sum("shak" in s.split() for s in gcide) < 10  # citations cut off (Shakespeare is the most cited)
