"""Make recipes/synthetic_en/prompts.txt from WordNet 3.0 usage examples (Debian wordnet-base).

WordNet's examples are short, modern English sentences written by lexicographers.
We keep sentences of 4-16 words whose words are all among the corpus's most frequent
ones, so that a small character model can learn them on a CPU; the text itself is
untouched real English. Rerun: apt-get install wordnet-base && python scripts/make_prompts.py
"""
from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path

from asr.text import normalize_text

WORDNET = Path("/usr/share/wordnet")


def wordnet_examples() -> list[str]:
    examples = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            gloss = line.split("|", 1)[1]
            examples += re.findall(r'"([^"]+)"', gloss)
    return examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="recipes/synthetic_en/prompts.txt")
    ap.add_argument("--count", type=int, default=8000)
    ap.add_argument("--top-words", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude", help="a prompts file whose sentences to leave out (to make training-only extras)")
    args = ap.parse_args()

    raw = {e.strip() for e in wordnet_examples() if not re.search(r"[0-9;:()\[\]]", e)}
    normed = {e: normalize_text(e) for e in sorted(raw)}
    freq = Counter(w for t in normed.values() for w in t.split())
    common = {w for w, _ in freq.most_common(args.top_words)}
    keep = [e for e, t in normed.items() if 4 <= len(t.split()) <= 16 and set(t.split()) <= common]
    seen, unique = set(), []
    if args.exclude:
        lines = Path(args.exclude).read_text(encoding="utf-8").splitlines()
        seen = {normalize_text(ln) for ln in lines if ln.strip() and not ln.startswith("#")}
    for e in keep:
        if normed[e] not in seen:
            seen.add(normed[e])
            unique.append(e)
    random.Random(args.seed).shuffle(unique)
    out = unique[: args.count]
    header = (
        "# English sentences: usage examples from WordNet 3.0 (Princeton University), Debian package wordnet-base.\n"
        "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Used under the WordNet 3.0\n"
        "# licence (permission to use, copy, modify and distribute, with this notice). Made by scripts/make_prompts.py\n"
        f"# ({len(out)} of {len(raw)} examples: 4-16 words, all among the {args.top_words} most frequent words"
        + (f", none in {Path(args.exclude).name}" if args.exclude else "") + ").\n"
    )
    Path(args.out).write_text(header + "\n".join(out) + "\n")
    print(f"wrote {len(out)} sentences to {args.out} ({len(unique)} eligible of {len(raw)})")


if __name__ == "__main__":
    main()
