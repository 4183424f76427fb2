"""Text normalisation and the character vocabulary.

The same `normalize_text` runs on training transcripts, LM text and scoring references,
so that a model is never penalised for a spelling convention it was not taught.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

BLANK = "<blank>"
SPACE = " "

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


class OutOfVocabularyError(ValueError):
    """Raised when text holds characters the vocabulary cannot represent."""


class CharVocabulary:
    """Characters of the model's output layer; index 0 is the CTC blank, ' ' separates words."""

    def __init__(self, chars: Sequence[str]):
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
        return isinstance(other, CharVocabulary) and self.labels == other.labels

    @classmethod
    def build(cls, texts: Iterable[str]) -> "CharVocabulary":
        """The set of characters in already-normalised `texts`, plus space."""
        counts = Counter()
        for t in texts:
            counts.update(t)
        counts[SPACE] += 1
        return cls(sorted(counts, key=lambda c: (c != SPACE, c != "'", c)))

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

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "labels": self.labels}, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "CharVocabulary":
        data = json.loads(Path(path).read_text())
        return cls(data["labels"][1:])


def check_vocabulary(vocab: CharVocabulary, items: Iterable[tuple[str, str]]) -> None:
    """Raise one error listing every (utterance, characters) pair the vocabulary cannot encode."""
    problems = [(utt, sorted(vocab.unknown(text))) for utt, text in items if vocab.unknown(text)]
    if problems:
        lines = "\n".join(f"  {utt}: {chars}" for utt, chars in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise OutOfVocabularyError(
            f"{len(problems)} utterance(s) contain characters outside the vocabulary:\n{lines}{more}"
        )
