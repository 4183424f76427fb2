"""tedlium: TED-LIUM release 2 or 3 (TED talks, segmented by the STM files).

    <corpus_dir>/{train,dev,test}/sph/<talk>.sph and <corpus_dir>/{train,dev,test}/stm/<talk>.stm
    (release 3: point corpus_dir at TEDLIUM_release-3/legacy)

STM lines: `<talk> <channel> <speaker> <start> <end> <label> <transcript>`. Segments whose transcript
is `ignore_time_segment_in_scoring` are dropped and counted; markers such as `<unk>`, `{NOISE}` and
pronunciation variants `(2)` are removed from transcripts.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from asr.atomic import write_text_atomic
from asr.prepare import Item, prepare_split, write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages

SPLITS = ("train", "dev", "test")
MARKERS = re.compile(r"<[^>]*>|\{[^}]*\}|\(\d+\)")
IGNORE = "ignore_time_segment_in_scoring"


@dataclass
class TedliumConfig(RecipeConfig):
    corpus_dir: str = "corpora/TEDLIUM_release2"
    data_dir: str = "data/tedlium"
    max_duration: float = 30.0


SCHEMA = TedliumConfig


class CorpusError(FileNotFoundError):
    """TED-LIUM is missing or not in its release layout."""


def split_items(root: Path, split: str) -> tuple[list[Item], int]:
    """Segments of one split, and how many were marked ignore_time_segment_in_scoring."""
    stm_dir = root / split / "stm"
    stms = sorted(stm_dir.glob("*.stm")) if stm_dir.is_dir() else []
    if not stms:
        raise CorpusError(f"TED-LIUM {split} not found: no {stm_dir}/*.stm (corpus_dir must hold train/, dev/, test/)")
    items, ignored = [], 0
    for stm in stms:
        for n, line in enumerate(stm.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split(maxsplit=6)
            if len(parts) < 6 or line.startswith(";;"):
                continue
            talk, _, speaker, start, end = parts[:5]
            text = parts[6] if len(parts) > 6 else ""
            if text.strip() == IGNORE:
                ignored += 1
                continue
            start_s, end_s = float(start), float(end)
            items.append(Item(f"{talk}-{int(round(start_s * 100)):07d}-{int(round(end_s * 100)):07d}",
                              root / split / "sph" / f"{talk}.sph", MARKERS.sub(" ", text), speaker=speaker,
                              offset=start_s, duration=round(end_s - start_s, 3)))
    return items, ignored


def prepare_stage(cfg: TedliumConfig) -> None:
    root, data = Path(cfg.corpus_dir), Path(cfg.data_dir)
    report = {}
    for split in SPLITS:
        items, ignored = split_items(root, split)
        limit = cfg.max_duration if split == "train" else float("inf")
        report[split] = prepare_split(items, data, split, max_duration=limit)
        report[split]["ignored_segments"] = ignored
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: TedliumConfig) -> list[Stage]:
    root = Path(cfg.corpus_dir)
    prepare = Stage("prepare", lambda: prepare_stage(cfg), inputs=[root / s / "stm" for s in SPLITS],
                    outputs=cfg.paths.manifests(SPLITS) + [cfg.paths.lm_text],
                    config={"corpus": str(root), "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
