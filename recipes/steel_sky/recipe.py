"""steel_sky: people speaking, from the talkie data of Beneath a Steel Sky (Debian package).

About 3,400 clips of professional voice actors whose exact lines are in the game's text banks (asr.sky reads
them, and who says each one, from the installed data). Characters held out whole for dev and test never
speak in training; Foster, the hero, speaks nearly half the clips and is always in training.
Every clip is accounted for in <data_dir>/inventory.tsv: its split, or why it is not used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr import sky
from asr.atomic import write_text_atomic
from asr.prepare import write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages


@dataclass
class SteelSkyConfig(RecipeConfig):
    data_dir: str = "data/steel_sky"
    game_dir: str = sky.DATA_DIR
    dev_speakers: list[str] = field(default_factory=lambda: list(sky.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(sky.TEST_SPEAKERS))
    max_duration: float = 30.0


SCHEMA = SteelSkyConfig


def prepare_stage(cfg: SteelSkyConfig) -> None:
    data = Path(cfg.data_dir)
    report = sky.prepare(cfg.game_dir, data, cfg.features.sample_rate, cfg.dev_speakers, cfg.test_speakers,
                         max_duration=cfg.max_duration)
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: SteelSkyConfig) -> list[Stage]:
    data, game = Path(cfg.data_dir), Path(cfg.game_dir)
    prepare = Stage("prepare", lambda: prepare_stage(cfg),
                    inputs=[game / "sky.dnr", game / "sky.dsk", game / "sky.cpt"],
                    outputs=[data / "manifests" / f"{s}.jsonl" for s in ("train", "dev", "test")]
                    + [data / "lm_text.txt", data / "inventory.tsv"],
                    config={"dev": cfg.dev_speakers, "test": cfg.test_speakers, "rate": cfg.features.sample_rate,
                            "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
