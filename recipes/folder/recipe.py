"""folder: any folder of audio files with a same-named .txt transcript each, or a CSV/TSV listing.

    <corpus_dir>/**/<name>.<wav|flac|mp3|ogg|...> + <corpus_dir>/**/<name>.txt
    or listing=<file>.csv|.tsv with columns path,text (a header row is optional; paths relative to the listing)

Splits: `train/`, `dev/` and `test/` subfolders when the corpus has them (or a `split` column in the
listing); otherwise a seeded random split by dev_fraction/test_fraction. Characters are taken from
the training transcripts; dev/test items with characters training never shows are rejected and listed.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from asr.atomic import write_text_atomic
from asr.prepare import Item, prepare_split, write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages

AUDIO = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph", ".aiff", ".aif"}
SPLITS = ("train", "dev", "test")


@dataclass
class FolderConfig(RecipeConfig):
    corpus_dir: str = ""
    listing: str = ""  # CSV/TSV of path,text[,split] instead of .txt files
    data_dir: str = "data/folder"
    dev_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    max_duration: float = 30.0


SCHEMA = FolderConfig


class CorpusError(FileNotFoundError):
    """The folder or listing is missing or holds nothing usable."""


def folder_items(root: Path) -> list[tuple[Item, str | None]]:
    """(item, split from a train/dev/test folder name or None) for every audio file; missing .txt = empty text."""
    if not root.is_dir():
        raise CorpusError(f"corpus_dir not found: {root}")
    out = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO):
        txt = audio.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.exists() else ""
        split = next((s for s in SPLITS if s in audio.relative_to(root).parts[:-1]), None)
        rel = audio.relative_to(root).with_suffix("")
        out.append((Item("-".join(rel.parts), audio, text, speaker=audio.parent.name), split))
    if not out:
        raise CorpusError(f"{root}: no audio files ({', '.join(sorted(AUDIO))})")
    return out


def listing_items(listing: Path) -> list[tuple[Item, str | None]]:
    if not listing.exists():
        raise CorpusError(f"listing not found: {listing}")
    delimiter = "\t" if listing.suffix.lower() == ".tsv" else ","
    rows = list(csv.reader(listing.open(encoding="utf-8", newline=""), delimiter=delimiter))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "text"]:
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
    else:
        header = ["path", "text", "split"][: len(rows[0])] if rows else []
    out = []
    for n, row in enumerate(rows, 2 if "path" in header else 1):
        rec = dict(zip(header, row))
        path = listing.parent / rec.get("path", "")
        split = rec.get("split") if rec.get("split") in SPLITS else None
        out.append((Item(f"{path.stem}-{n}", path, rec.get("text", "")), split))
    if not out:
        raise CorpusError(f"{listing}: no rows")
    return out


def prepare_stage(cfg: FolderConfig) -> None:
    data = Path(cfg.data_dir)
    found = listing_items(Path(cfg.listing)) if cfg.listing else folder_items(Path(cfg.corpus_dir))
    if all(split is None for _, split in found):
        rng = random.Random(cfg.seed)
        shuffled = [item for item, _ in found]
        rng.shuffle(shuffled)
        n_dev, n_test = round(cfg.dev_fraction * len(shuffled)), round(cfg.test_fraction * len(shuffled))
        splits = {"dev": shuffled[:n_dev], "test": shuffled[n_dev: n_dev + n_test], "train": shuffled[n_dev + n_test:]}
    else:
        splits = {s: [item for item, split in found if (split or "train") == s] for s in SPLITS}
    report = {"train": prepare_split(splits["train"], data, "train", charset=None, max_duration=cfg.max_duration)}
    charset = {c for line in cfg.paths.manifest("train").open() for c in json.loads(line)["text"]} | {" "}
    for split in ("dev", "test"):
        report[split] = prepare_split(splits[split], data, split, charset=charset, max_duration=float("inf"))
    report["lm_text_sentences"] = write_lm_text(data, "train")
    report["characters"] = "".join(sorted(charset))
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2, ensure_ascii=False))


def stages(cfg: FolderConfig) -> list[Stage]:
    source = Path(cfg.listing) if cfg.listing else Path(cfg.corpus_dir)
    prepare = Stage("prepare", lambda: prepare_stage(cfg), inputs=[source],
                    outputs=cfg.paths.manifests(SPLITS) + [cfg.paths.lm_text],
                    config={"source": str(source), "dev": cfg.dev_fraction, "test": cfg.test_fraction,
                            "seed": cfg.seed, "max_duration": cfg.max_duration})
    return corpus_stages(cfg, prepare)


