"""amazon_queen: people speaking, from the talkie data of Flight of the Amazon Queen (Debian package).

About 6,300 clips (4.3 h) of professional voice actors whose exact lines are in the game's dialogues, cutaway
scenes and Joe's lines (asr.queen reads them from the installed resource file). Characters held out whole for dev and test
never speak in training; Joe, the hero, speaks a third of the clips and is always in training.
Every clip is accounted for in <data_dir>/inventory.tsv: its split, or why it is not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asr import queen
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, held_out_speaker_stages


@dataclass
class AmazonQueenConfig(RecipeConfig):
    data_dir: str = "data/amazon_queen"
    resource_file: str = queen.RESOURCE_FILE
    dev_speakers: list[str] = field(default_factory=lambda: list(queen.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(queen.TEST_SPEAKERS))
    max_duration: float = 30.0


SCHEMA = AmazonQueenConfig


def stages(cfg: AmazonQueenConfig) -> list[Stage]:
    def prepare() -> dict:
        return queen.prepare(cfg.resource_file, cfg.data_dir, cfg.features.sample_rate, cfg.dev_speakers,
                             cfg.test_speakers, max_duration=cfg.max_duration)

    return held_out_speaker_stages(cfg, prepare, inputs=[Path(cfg.resource_file)],
                                   config={"dev": cfg.dev_speakers, "test": cfg.test_speakers,
                                           "rate": cfg.features.sample_rate, "max_duration": cfg.max_duration})
