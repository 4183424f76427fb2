"""Text normalisation and the model's output vocabulary: characters, or SentencePiece units.

The same `normalize_text` runs on training transcripts, LM text and scoring references,
so that a model is never penalised for a spelling convention it was not taught.
"""
from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import write_text_atomic

BLANK = "<blank>"
SPACE = " "
WORD_START = "\u2581"  # SentencePiece's word-start mark

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?")
_SEPARATORS = re.compile(r"[-\u2010-\u2015/_]+")


def _spell_number(match: re.Match, lang: str) -> str:
    from num2words import num2words

    token = match.group(0)
    ordinal = token[-2:] in ("st", "nd", "rd", "th")
    digits = token[:-2] if ordinal else token
    if "," in digits and re.fullmatch(r"\d{1,3}(,\d{3})+", digits):
        digits = digits.replace(",", "")
    try:
        value = float(digits) if "." in digits else int(digits.replace(",", ""))
        return " " + num2words(value, lang=lang, to="ordinal" if ordinal else "cardinal") + " "
    except (ValueError, NotImplementedError, OverflowError):
        return " " + " ".join(num2words(int(d), lang=lang) for d in re.findall(r"\d", digits)) + " "


def normalize_text(text: str, lang: str = "en") -> str:
    """Lowercase, spell out numbers, keep letters and apostrophes, one space between words."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = _NUMBER.sub(lambda m: _spell_number(m, lang), text)
    text = _SEPARATORS.sub(" ", text)
    chars = [c if (c.isalpha() or c == "'" or unicodedata.category(c) in ("Mn", "Mc")) else " " for c in text]
    # an apostrophe only belongs inside a word ("don't", "o'clock"), not as a quote mark
    words = (w.strip("'") for w in "".join(chars).split())
    return " ".join(w for w in words if w)


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def verbatim_text(text: str, lang: str = "en") -> str:
    """Text as written (case, digits and punctuation kept: text-line images), NFKC-normalised, curly quotes
    made straight, one space between words."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return " ".join(text.split())


NORMALIZERS = {"speech": normalize_text, "verbatim": verbatim_text}  # data.text_norm


def normalizer(name: str):
    """The transcript normaliser `name` (a key of NORMALIZERS)."""
    if name not in NORMALIZERS:
        raise ValueError(f"text normalisation must be one of {', '.join(NORMALIZERS)}, got {name!r}")
    return NORMALIZERS[name]


class OutOfVocabularyError(ValueError):
    """Raised when text holds characters the vocabulary cannot represent."""


class CharVocabulary:
    """Characters of the model's output layer; index 0 is the CTC blank, ' ' separates words."""

    def __init__(self, chars: Sequence[str], text_norm: str = "speech"):
        self.text_norm, self.normalize = text_norm, normalizer(text_norm)
        chars = list(chars)
        if SPACE not in chars:
            raise ValueError("a character vocabulary needs the space ' ' as word separator")
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in vocabulary")
        self.labels: list[str] = [BLANK] + chars
        self.index = {c: i for i, c in enumerate(self.labels)}

    blank: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocabulary) and (self.labels, self.text_norm) == (other.labels, other.text_norm)

    @classmethod
    def build(cls, texts: Iterable[str], text_norm: str = "speech") -> "CharVocabulary":
        """The set of characters in already-normalised `texts`, plus space."""
        counts = Counter()
        for t in texts:
            counts.update(t)
        counts[SPACE] += 1
        return cls(sorted(counts, key=lambda c: (c != SPACE, c != "'", c)), text_norm)

    def unknown(self, text: str) -> set[str]:
        return {c for c in text if c not in self.index}

    def encode(self, text: str, utt_id: str | None = None) -> list[int]:
        """Token ids of normalised `text`; raises OutOfVocabularyError naming the characters."""
        bad = self.unknown(text)
        if bad:
            where = f" in utterance {utt_id!r}" if utt_id else ""
            raise OutOfVocabularyError(f"characters outside the vocabulary{where}: {sorted(bad)} (text: {text!r})")
        return [self.index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of already-collapsed ids (blanks skipped), with spaces tidied."""
        text = "".join(self.labels[i] for i in ids if i != self.blank)
        return " ".join(text.split())

    def to_list(self) -> list[str]:
        return self.labels[1:]

    def to_dict(self) -> dict:
        return {"type": "char", "labels": self.labels, "text_norm": self.text_norm}

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "CharVocabulary":
        data = json.loads(Path(path).read_text())
        return cls(data["labels"][1:], data.get("text_norm", "speech"))


class PieceVocabulary:
    """SentencePiece units (BPE or unigram) as the model's outputs: index 0 is the CTC blank,
    index i + 1 is piece i, and "▁" marks a word start. The trained model travels inside it."""

    blank: int = 0

    def __init__(self, model_proto: bytes, text_norm: str = "speech"):
        import sentencepiece as spm

        self.text_norm, self.normalize = text_norm, normalizer(text_norm)
        self.proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        self.labels: list[str] = [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self.chars = {c for i in range(self.sp.get_piece_size()) if not (self.sp.is_unknown(i) or self.sp.is_control(i))
                      for c in self.sp.id_to_piece(i) if c != WORD_START}

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PieceVocabulary) and (self.labels, self.text_norm) == (other.labels, other.text_norm)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 256, model_type: str = "bpe",
              text_norm: str = "speech") -> "PieceVocabulary":
        """Train SentencePiece on already-normalised `texts` (every character kept)."""
        import io

        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("no text to train a SentencePiece model on")
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=False,
            normalization_rule_name="identity", minloglevel=2)
        return cls(out.getvalue(), text_norm)

    def unknown(self, text: str) -> set[str]:
        return {c for c in text if c != SPACE and c not in self.chars}

    def encode(self, text: str, utt_id: str | None = None) -> list[int]:
        """Token ids of normalised `text`; raises OutOfVocabularyError naming characters no piece covers."""
        bad = self.unknown(text)
        if bad:
            where = f" in utterance {utt_id!r}" if utt_id else ""
            raise OutOfVocabularyError(f"characters outside the vocabulary{where}: {sorted(bad)} (text: {text!r})")
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of already-collapsed ids (blanks skipped)."""
        text = "".join(self.labels[i] for i in ids if i != self.blank).replace(WORD_START, " ")
        return " ".join(text.split())

    def to_dict(self) -> dict:
        return {"type": "sentencepiece", "labels": self.labels, "model": base64.b64encode(self.proto).decode(),
                "text_norm": self.text_norm}

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))


Vocabulary = CharVocabulary | PieceVocabulary


def vocabulary_from_dict(data: dict) -> Vocabulary:
    """A vocabulary from its saved form (vocab.json, or the copy inside a checkpoint)."""
    text_norm = data.get("text_norm", "speech")  # vocabularies saved before it was recorded are all "speech"
    if data.get("type", "char") == "sentencepiece":
        vocab = PieceVocabulary(base64.b64decode(data["model"]), text_norm)
        if data.get("labels") not in (None, vocab.labels):
            raise ValueError("vocabulary labels do not match its SentencePiece model")
        return vocab
    return CharVocabulary(data["labels"][1:], text_norm)


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read vocab.json (characters or SentencePiece)."""
    return vocabulary_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def build_vocabulary(texts: Iterable[str], tokenizer: str = "char", vocab_size: int = 256,
                     text_norm: str = "speech") -> Vocabulary:
    """Characters of `texts`, or SentencePiece units ("bpe" / "unigram") trained on them; `text_norm` is how
    the texts were normalised, kept so that references are normalised alike when the model is scored."""
    if tokenizer == "char":
        return CharVocabulary.build(texts, text_norm)
    if tokenizer in ("bpe", "unigram"):
        return PieceVocabulary.train(texts, vocab_size, tokenizer, text_norm)
    raise ValueError(f"tokenizer must be char, bpe or unigram, got {tokenizer!r}")


def check_vocabulary(vocab: "Vocabulary", items: Iterable[tuple[str, str]]) -> None:
    """Raise one error listing every (utterance, characters) pair the vocabulary cannot encode."""
    problems = [(utt, sorted(vocab.unknown(text))) for utt, text in items if vocab.unknown(text)]
    if problems:
        lines = "\n".join(f"  {utt}: {chars}" for utt, chars in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise OutOfVocabularyError(
            f"{len(problems)} utterance(s) contain characters outside the vocabulary:\n{lines}{more}"
        )
