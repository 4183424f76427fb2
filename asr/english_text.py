"""Offline English text for language models: what Debian packages install, cut into sentences and normalised
as transcripts are, so an LM knows words and phrases beyond a recipe's own prompts.

Sources (each used when installed): `fortunes` (quotations, jokes and sayings: conversational English) and
`wordnet-base` (the usage examples of WordNet's glosses). Sentences a recipe holds out (its dev and test
transcripts) are left out, so no test sentence reaches its LM.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from .text import normalize_text

FORTUNES = Path("/usr/share/games/fortunes")
WORDNET = Path("/usr/share/wordnet")
SOURCES = ("fortunes", "wordnet")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def fortunes(folder: Path = FORTUNES) -> Iterable[str]:
    """The fortunes' sentences, without their attribution lines ("-- Author")."""
    for path in sorted(folder.iterdir() if folder.is_dir() else []):
        if path.suffix or not path.is_file():  # .dat indexes and .u8 links
            continue
        for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            body = "\n".join(line for line in fortune.splitlines() if not line.strip().startswith("--"))
            yield from _SENTENCE_END.split(re.sub(r"[ \t]*\n[ \t]*(?=\S)", " ", body))


def wordnet_examples(folder: Path = WORDNET) -> Iterable[str]:
    """WordNet's usage examples: the quoted sentences in its glosses."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if not line.startswith("  ") and "|" in line:  # not the licence header
                yield from re.findall(r'"([^"]+)"', line.split("|", 1)[1])


def english_sentences(sources: Iterable[str] = SOURCES, exclude: Iterable[str] = (), min_words: int = 3,
                      max_words: int = 30) -> list[str]:
    """Distinct normalised sentences of the installed `sources`, none of them in `exclude` (normalised too)."""
    readers = {"fortunes": fortunes, "wordnet": wordnet_examples}
    unknown = sorted(set(sources) - set(readers))
    if unknown:
        raise ValueError(f"unknown text sources {unknown}; available: {', '.join(SOURCES)}")
    held_out = {normalize_text(t) for t in exclude}
    out: dict[str, None] = {}
    for name in sources:
        for raw in readers[name]():
            text = normalize_text(raw)
            if min_words <= len(text.split()) <= max_words and text not in held_out:
                out[text] = None
    return list(out)
