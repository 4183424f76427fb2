"""librispeech: LibriSpeech as OpenSLR ships it (SLR12), prepared from its own layout.

    <corpus_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <corpus_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

Stages: prepare -> vocabulary -> lm -> train -> tune -> decode -> score. The LM is built from the
training transcripts, plus the official LM corpus (librispeech-lm-norm.txt, SLR11) when given as
lm.extra_text (then KenLM's lmplz is needed: the text is 800M words).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from asr.atomic import write_text_atomic
from asr.prepare import Item, prepare_split, write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages

log = logging.getLogger("asr.recipe.librispeech")
SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
           "test-other")


@dataclass
class LibriSpeechConfig(RecipeConfig):
    corpus_dir: str = "corpora"  # the folder that holds LibriSpeech/
    data_dir: str = "data/librispeech"
    train_subsets: list[str] = field(default_factory=lambda: ["train-clean-100"])
    dev_subsets: list[str] = field(default_factory=lambda: ["dev-clean"])
    test_sets: list[str] = field(default_factory=lambda: ["test-clean", "test-other"])
    max_duration: float = 35.0  # LibriSpeech utterances are at most ~35 s


SCHEMA = LibriSpeechConfig


class CorpusError(FileNotFoundError):
    """The corpus is not where the config says, or not in LibriSpeech's layout."""


def subset_items(root: Path, subset: str) -> list[Item]:
    """Every utterance listed by the subset's .trans.txt files (audio is checked later)."""
    folder = root / "LibriSpeech" / subset
    if not folder.is_dir():
        raise CorpusError(f"LibriSpeech subset {subset!r} not found: expected {folder} "
                          f"(corpus_dir must hold the LibriSpeech/ folder from openslr.org/12)")
    items = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            items.append(Item(utt_id, trans.parent / f"{utt_id}.flac", text, speaker=speaker))
    if not items:
        raise CorpusError(f"{folder}: no <speaker>/<chapter>/*.trans.txt transcripts found")
    return items


def prepare_stage(cfg: LibriSpeechConfig) -> None:
    root, data = Path(cfg.corpus_dir), Path(cfg.data_dir)
    for name in cfg.train_subsets + cfg.dev_subsets + cfg.test_sets:
        if name not in SUBSETS:
            raise CorpusError(f"unknown LibriSpeech subset {name!r}; subsets: {', '.join(SUBSETS)}")
    splits = {"train": cfg.train_subsets, "dev": cfg.dev_subsets, **{t: [t] for t in cfg.test_sets}}
    report = {}
    for split, subsets in splits.items():
        items = [item for s in subsets for item in subset_items(root, s)]
        limit = cfg.max_duration if split == "train" else float("inf")  # test sets are scored whole
        report[split] = prepare_split(items, data, split, max_duration=limit)
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: LibriSpeechConfig) -> list[Stage]:
    root = Path(cfg.corpus_dir)
    subsets = cfg.train_subsets + cfg.dev_subsets + cfg.test_sets
    prepare = Stage("prepare", lambda: prepare_stage(cfg), inputs=[root / "LibriSpeech" / s for s in subsets],
                    outputs=cfg.paths.manifests(["train", "dev", *cfg.test_sets])
                    + [cfg.paths.lm_text],
                    config={"subsets": subsets, "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
