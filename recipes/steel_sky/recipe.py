"""steel_sky: people speaking, from the talkie data of Beneath a Steel Sky (Debian package).

About 3,400 clips of professional voice actors whose exact lines are in the game's text banks (asr.sky reads
them, and who says each one, from the installed data). Characters held out whole for dev and test never
speak in training; Foster, the hero, speaks nearly half the clips and is always in training.
Every clip is accounted for in <data_dir>/inventory.tsv: its split, or why it is not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asr import sky
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, held_out_speaker_stages


@dataclass
class SteelSkyConfig(RecipeConfig):
    data_dir: str = "data/steel_sky"
    game_dir: str = sky.DATA_DIR
    dev_speakers: list[str] = field(default_factory=lambda: list(sky.DEV_SPEAKERS))
    test_speakers: list[str] = field(default_factory=lambda: list(sky.TEST_SPEAKERS))
    max_duration: float = 30.0


SCHEMA = SteelSkyConfig


def stages(cfg: SteelSkyConfig) -> list[Stage]:
    def prepare() -> dict:
        return sky.prepare(cfg.game_dir, cfg.data_dir, cfg.features.sample_rate, cfg.dev_speakers,
                           cfg.test_speakers, max_duration=cfg.max_duration)

    game = Path(cfg.game_dir)
    return held_out_speaker_stages(cfg, prepare, inputs=[game / "sky.dnr", game / "sky.dsk", game / "sky.cpt"],
                                   config={"dev": cfg.dev_speakers, "test": cfg.test_speakers,
                                           "rate": cfg.features.sample_rate, "max_duration": cfg.max_duration})
