"""Where a recipe's files live. Every stage, recipe and default config asks `RecipePaths`; none spells the layout.

    <data_dir>/manifests/<name>.jsonl   train, dev and each test set (what `asr train/evaluate` read)
    <data_dir>/lm_text.txt              the LM's training text (training transcripts, never dev or test)
    <data_dir>/lm/<order>gram.arpa      the LM
    <data_dir>/vocab.json               the vocabulary
    <exp_dir>/best.pt                   the model the later stages use
    <exp_dir>/decode_<set>_<decoder>/   one decode: summary.json, utterances.jsonl
    <exp_dir>/results.json              the recipe's figures
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecipePaths:
    data: Path
    exp: Path = Path("exp")
    lm_order: int = 4

    def manifest(self, name: str) -> Path:
        return self.data / "manifests" / f"{name}.jsonl"

    def manifests(self, names: Iterable[str]) -> list[Path]:
        return [self.manifest(n) for n in names]

    @property
    def lm_text(self) -> Path:
        return self.data / "lm_text.txt"

    @property
    def lm(self) -> Path:
        return self.data / "lm" / f"{self.lm_order}gram.arpa"

    @property
    def vocabulary(self) -> Path:
        return self.data / "vocab.json"

    @property
    def model(self) -> Path:
        return self.exp / "best.pt"

    def decode(self, name: str, decoder: str) -> Path:
        return self.exp / f"decode_{name}_{decoder}"

    @property
    def results(self) -> Path:
        return self.exp / "results.json"

