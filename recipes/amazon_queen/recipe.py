"""amazon_queen: people speaking, from the talkie data of Flight of the Amazon Queen (Debian package).

About 6,300 clips (4.3 h) of professional voice actors whose exact lines are in the game's dialogues, cutaway
scenes and Joe's lines (asr.queen reads them from the installed resource file). Characters held out whole for dev and test
never speak in training; Joe, the hero, speaks a third of the clips and is always in training.
Every clip is accounted for in <data_dir>/inventory.tsv: its split, or why it is not used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr import queen
from asr.atomic import write_text_atomic
from asr.prepare import write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages


@dataclass
class AmazonQueenConfig(RecipeConfig):
    data_dir: str = "data/amazon_queen"
    resource_file: str = queen.RESOURCE_FILE
    dev_speakers: list[str] = field(default_factory=lambda: list(queen.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(queen.TEST_SPEAKERS))
    max_duration: float = 30.0


SCHEMA = AmazonQueenConfig


def prepare_stage(cfg: AmazonQueenConfig) -> None:
    data = Path(cfg.data_dir)
    report = queen.prepare(cfg.resource_file, data, cfg.features.sample_rate, cfg.dev_speakers, cfg.test_speakers,
                           max_duration=cfg.max_duration)
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: AmazonQueenConfig) -> list[Stage]:
    data = Path(cfg.data_dir)
    prepare = Stage("prepare", lambda: prepare_stage(cfg), inputs=[Path(cfg.resource_file)],
                    outputs=[data / "manifests" / f"{s}.jsonl" for s in ("train", "dev", "test")]
                    + [data / "lm_text.txt", data / "inventory.tsv"],
                    config={"dev": cfg.dev_speakers, "test": cfg.test_speakers, "rate": cfg.features.sample_rate,
                            "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
