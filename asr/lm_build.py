"""Building word n-gram LMs from text: KenLM's lmplz when present, else our modified Kneser-Ney estimator.

Text is normalised exactly like training transcripts, so LM words and model words match.
The built-in estimator follows lmplz (interpolated modified Kneser-Ney, Chen & Goodman 1998;
Heafield et al. 2013) closely enough that its ARPA file matches lmplz's to float precision; it
holds counts in memory, so it suits recipe-sized text (millions of words), not LibriSpeech's LM corpus.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write, write_text_atomic
from .text import normalizer

log = logging.getLogger("asr.lm")
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback defaults


class LMBuildError(RuntimeError):
    """The LM could not be built (no text, bad order, a KenLM tool failed)."""


@dataclass
class NGramModel:
    """An ARPA-style backoff model: per order, n-gram -> (log10 prob, log10 backoff)."""
    order: int
    grams: list[dict[tuple[str, ...], tuple[float, float]]]  # grams[n - 1] holds the n-grams
    discounts: list[tuple[float, float, float]] = field(default_factory=list)
    fallback_orders: list[int] = field(default_factory=list)  # orders whose discounts fell back


def read_corpus(paths: Iterable[str | Path], text_norm: str = "speech") -> tuple[list[list[str]], dict]:
    """Sentences (one per non-empty line) of text files normalised as `text_norm` says (asr.text.NORMALIZERS),
    and counts of what was read."""
    normalize = normalizer(text_norm)
    sentences, lines, empty = [], 0, 0
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise LMBuildError(f"LM text not found: {path}")
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                lines += 1
                words = normalize(line).split()
                if words:
                    sentences.append(words)
                else:
                    empty += 1
    if not sentences:
        raise LMBuildError(f"no words in the LM text ({lines} lines read from {', '.join(map(str, paths))})")
    words = sum(len(s) for s in sentences)
    return sentences, {"lines": lines, "sentences": len(sentences), "empty_lines_skipped": empty, "words": words,
                       "vocabulary": len({w for s in sentences for w in s})}


def _discounts(counts: dict, order: int) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from counts-of-counts (Chen & Goodman eq. 26)."""
    n = Counter(min(c, 5) for c in counts.values() if c > 0)
    if any(n[j] == 0 for j in (1, 2, 3)):
        return FALLBACK_DISCOUNTS, True
    y = n[1] / (n[1] + 2.0 * n[2])
    d = tuple(j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3))
    if any(not 0.0 <= d[j - 1] <= j for j in (1, 2, 3)):
        return FALLBACK_DISCOUNTS, True
    return d, False  # type: ignore[return-value]


def kneser_ney(sentences: Iterable[list[str]], order: int = 4) -> NGramModel:
    """Estimate an interpolated modified Kneser-Ney model the way lmplz does (no pruning)."""
    if order < 2:
        raise LMBuildError(f"LM order must be at least 2 (KenLM needs bigrams), got {order}")
    raw: Counter = Counter()
    for words in sentences:
        toks = [BOS] * (order - 1) + list(words) + [EOS]
        for i in range(len(toks) - order + 1):
            raw[tuple(toks[i:i + order])] += 1
    # adjusted counts: raw counts for the highest order and for n-grams that start at <s>,
    # otherwise the number of distinct words seen to the left (continuation counts)
    counts: list[dict] = [dict() for _ in range(order + 1)]
    for g, c in raw.items():
        if g[1] == BOS:
            k = max(i for i, w in enumerate(g) if w == BOS)
            counts[order - k][g[k:]] = counts[order - k].get(g[k:], 0) + c
        else:
            counts[order][g] = c
    for n in range(order - 1, 0, -1):
        for g in counts[n + 1]:
            counts[n][g[1:]] = counts[n].get(g[1:], 0) + 1
    counts[1].setdefault((UNK,), 0)

    discounts, fallback = [], []
    for n in range(1, order + 1):
        d, fell = _discounts(counts[n], n)
        discounts.append(d)
        if fell:
            fallback.append(n)

    def discounted(a: int, n: int) -> float:
        return a - discounts[n - 1][min(a, 3) - 1] if a > 0 else 0.0

    # gamma(context): the mass taken by discounting, given to the lower order
    gamma: list[dict] = [dict() for _ in range(order + 1)]
    for n in range(1, order + 1):
        denom: dict = defaultdict(float)
        mass: dict = defaultdict(float)
        for g, a in counts[n].items():
            if a > 0:
                denom[g[:-1]] += a
                mass[g[:-1]] += discounts[n - 1][min(a, 3) - 1]
        gamma[n - 1] = {h: (mass[h] / denom[h], denom[h]) for h in denom}

    probs: list[dict] = [dict() for _ in range(order + 1)]
    g0, d0 = gamma[0][()]
    vocab_size = len(counts[1])  # includes <unk> and </s>, not <s>
    for g, a in counts[1].items():
        probs[1][g] = discounted(a, 1) / d0 + g0 / vocab_size
    probs[1][(BOS,)] = 1.0
    for n in range(2, order + 1):
        for g, a in counts[n].items():
            gm, dn = gamma[n - 1][g[:-1]]
            probs[n][g] = discounted(a, n) / dn + gm * probs[n - 1][g[1:]]

    grams = []
    for n in range(1, order + 1):
        table = {}
        for g, p in probs[n].items():
            backoff = 0.0
            if n < order and g in gamma[n] and g[-1] not in (UNK, EOS):
                backoff = math.log10(gamma[n][g][0])
            table[g] = (min(0.0, math.log10(p)), backoff)
        grams.append(table)
    return NGramModel(order, grams, discounts, fallback)


def write_arpa(model: NGramModel, path: str | Path) -> None:
    """Write `model` as an ARPA file (atomically)."""
    with atomic_write(path) as f:
        f.write("\\data\\\n")
        for n, table in enumerate(model.grams, 1):
            f.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(model.grams, 1):
            f.write(f"\n\\{n}-grams:\n")
            for g, (p, b) in table.items():
                f.write(f"{p:.7g}\t{' '.join(g)}\t{b:.7g}\n" if n < model.order else f"{p:.7g}\t{' '.join(g)}\n")
        f.write("\n\\end\\\n")


def read_arpa(path: str | Path) -> dict[tuple[str, ...], tuple[float, float]]:
    """All n-grams of an ARPA file: n-gram -> (log10 prob, log10 backoff)."""
    grams, inside = {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("\\") and line.endswith("-grams:"):
                inside = True
                continue
            if not inside or not line or line.startswith("\\"):
                continue
            parts = line.split("\t")
            grams[tuple(parts[1].split())] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return grams


def kenlm_tool(name: str) -> str | None:
    """Path of a KenLM binary (lmplz, build_binary): next to this Python, then on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def prune_problem(prune: Sequence[int], order: int) -> str | None:
    """What is wrong with lmplz's --prune thresholds `prune` for an `order`-gram LM (None: nothing). A threshold
    per order from unigrams on, the last one holding for the orders after it: n-grams seen at most that many
    times are dropped, so [0, 0, 1] drops the 3- and 4-grams seen once."""
    if not prune:
        return None
    if len(prune) > order:
        return f"at most one threshold per order ({order})"
    if prune[0] != 0:
        return "the first threshold (unigrams) must be 0: lmplz keeps every word"
    if any(b < a for a, b in zip(prune, prune[1:])):
        return "thresholds must not decrease with the order"
    return None


def build_lm(texts: Iterable[str | Path], out: str | Path, order: int = 4, engine: str = "auto",
             memory: str = "20%", text_norm: str = "speech", prune: Sequence[int] = ()) -> dict:
    """Build an n-gram LM from text files into `out` (.arpa, or .bin/.binary via build_binary).

    Also writes `<out>.unigrams.txt` (the LM's words, for the decoder's partial-word check).
    engine: "lmplz", "builtin" or "auto" (lmplz when found); `prune`: lmplz's count thresholds per order (see
    `prune_problem`; lmplz only). Returns a report of what was done.
    """
    out = Path(out)
    texts = [Path(t) for t in texts]
    prune = [int(x) for x in prune]
    if engine not in ("auto", "lmplz", "builtin"):
        raise LMBuildError(f"engine must be auto, lmplz or builtin, got {engine!r}")
    if order < 2:
        raise LMBuildError(f"LM order must be at least 2 (KenLM needs bigrams), got {order}")
    problem = prune_problem(prune, order)
    if problem:
        raise LMBuildError(f"prune {prune}: {problem}")
    binary = out.suffix in (".bin", ".binary", ".klm")
    if binary and kenlm_tool("build_binary") is None:
        raise LMBuildError(f"{out}: a binary LM needs KenLM's build_binary (bash scripts/build_kenlm.sh), "
                           "or ask for an .arpa file")
    lmplz = kenlm_tool("lmplz") if engine in ("auto", "lmplz") else None
    if engine == "lmplz" and lmplz is None:
        raise LMBuildError("engine=lmplz but lmplz was not found (bash scripts/build_kenlm.sh builds it)")
    if any(prune) and lmplz is None:
        raise LMBuildError(f"prune {prune}: pruning needs KenLM's lmplz (bash scripts/build_kenlm.sh builds it; "
                           f"engine={engine})")
    sentences, report = read_corpus(texts, text_norm)
    out.parent.mkdir(parents=True, exist_ok=True)
    arpa = out.with_suffix(".arpa") if binary else out
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        if lmplz:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
            cmd = [lmplz, "-o", str(order), "--discount_fallback", "-S", memory, "-T", tmp]
            if any(prune):
                cmd += ["--prune", *map(str, prune)]
            with corpus.open() as fin, open(Path(tmp) / "lm.arpa", "w") as fout:
                run = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=True)
            if run.returncode != 0:
                raise LMBuildError(f"lmplz failed ({run.returncode}): {run.stderr.strip()[-800:]}")
            os.replace(Path(tmp) / "lm.arpa", arpa)
            report["engine"] = "lmplz"
        else:
            model = kneser_ney(sentences, order)
            write_arpa(model, arpa)
            report.update(engine="builtin", discounts=[list(map(float, d)) for d in model.discounts],
                          discount_fallback_orders=model.fallback_orders)
        if binary:
            tmp_bin = Path(tmp) / "lm.bin"
            run = subprocess.run([kenlm_tool("build_binary"), str(arpa), str(tmp_bin)], capture_output=True, text=True)
            if run.returncode != 0:
                raise LMBuildError(f"build_binary failed ({run.returncode}): {run.stderr.strip()[-800:]}")
            os.replace(tmp_bin, out)
    words = sorted({w for s in sentences for w in s})
    write_text_atomic(out.with_suffix(".unigrams.txt"), "\n".join(words) + "\n")
    report.update(order=order, prune=prune, output=str(out), ngrams=_ngram_counts(arpa))
    log.info(f"built {order}-gram LM {out} with {report['engine']}: {report['sentences']} sentences, "
             f"{report['words']} words, vocabulary {report['vocabulary']}")
    return report


def _ngram_counts(arpa: Path) -> dict[str, int]:
    counts = {}
    with arpa.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                n, c = line[6:].strip().split("=")
                counts[n] = int(c)
            elif line.startswith("\\1-grams"):
                break
    return counts
