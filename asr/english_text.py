"""Offline English text for language models: what Debian packages install, cut into sentences and normalised
as transcripts are, so an LM knows words and phrases beyond a recipe's own prompts.

Sources (each used when installed): `fortunes` (quotations, jokes and sayings: conversational English),
`wordnet-base` (the usage examples of WordNet's glosses), `bible-kjv` (the King James Bible, read through the
package's own `bible` program, cut into clauses) and `dict-gcide` (the literary quotations that illustrate the
senses of the Collaborative International Dictionary of English). Sentences a recipe holds out (its dev and
test transcripts) are left out, so no test sentence reaches its LM.
"""
from __future__ import annotations

import gzip
import logging
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .text import normalize_text

FORTUNES = Path("/usr/share/games/fortunes")
WORDNET = Path("/usr/share/wordnet")
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
log = logging.getLogger("asr.english_text")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_CLAUSE_END = re.compile(r"(?<=[.!?;:])\s+")


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


def kjv_clauses(program: str = "bible") -> Iterable[str]:
    """The King James Bible's verses (Debian `bible-kjv`), cut at clause ends: a verse is often one long sentence."""
    path = shutil.which(program)
    if path is None:
        return
    run = subprocess.run([path, "-l1000", "gen1:1-rev22:21"], capture_output=True, text=True)  # no line wrapping
    if run.returncode != 0:
        raise RuntimeError(f"{path} could not print the King James Bible (exit {run.returncode}): "
                           f"{run.stderr.strip()[-300:]}")
    for line in run.stdout.splitlines():
        verse = re.match(r"\s+\d+ (.+)", line)  # "  3 And God said, ..."; book and chapter headings have no number
        if verse:
            yield from _CLAUSE_END.split(verse.group(1))


def gcide_quotations(path: Path = GCIDE) -> Iterable[str]:
    """GCIDE's illustrative quotations: paragraphs indented as block quotes that end in a citation ("--Shak.")."""
    if not path.exists():
        return
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:  # dictzip is gzip to a reader
        text = f.read()
    for para in re.split(r"\n[ \t]*(?:\[[^\]\n]*\][ \t]*)?\n", text):  # blank or "[1913 Webster]" lines
        lines = [line for line in para.split("\n") if line.strip()]
        if lines and all(re.match(r" {8,}\S", line) for line in lines):
            quote = re.match(r"(.*?)\s+--\s?[A-Z].*$", " ".join(line.strip() for line in lines))
            if quote:
                yield quote.group(1)


# each source: its reader and the Debian package that installs its text
_SOURCES = {"fortunes": (fortunes, "fortunes"), "wordnet": (wordnet_examples, "wordnet-base"),
            "kjv": (kjv_clauses, "bible-kjv"), "gcide": (gcide_quotations, "dict-gcide")}
SOURCES = tuple(_SOURCES)


def english_sentences(sources: Iterable[str] = SOURCES, exclude: Iterable[str] = (), min_words: int = 3,
                      max_words: int = 30) -> list[str]:
    """Distinct normalised sentences of the installed `sources`, none of them in `exclude` (normalised too)."""
    unknown = sorted(set(sources) - set(_SOURCES))
    if unknown:
        raise ValueError(f"unknown text sources {unknown}; available: {', '.join(SOURCES)}")
    held_out = {normalize_text(t) for t in exclude}
    out: dict[str, None] = {}
    for name in sources:
        before = len(out)
        read, package = _SOURCES[name]
        for raw in read():
            text = normalize_text(raw)
            if min_words <= len(text.split()) <= max_words and text not in held_out:
                out[text] = None
        if len(out) == before:
            log.warning(f"text source {name!r} gave no sentences: is Debian's {package} installed?")
    return list(out)
