"""commonvoice: Mozilla Common Voice, any language, from the release's own layout.

    <corpus_dir>/clips/*.mp3 and <corpus_dir>/{train,dev,test}.tsv
    (tab-separated, header row: client_id, path, sentence, up_votes, down_votes, age, gender, ...)

The character set is learnt per language from the training sentences: characters seen fewer than
`min_char_count` times (foreign letters, stray symbols) are reported, and the utterances using them
are rejected and listed, never silently changed.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from asr.atomic import write_text_atomic
from asr.prepare import Item, prepare_split, write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages
from asr.text import normalize_text

SPLITS = ("train", "dev", "test")


@dataclass
class CommonVoiceConfig(RecipeConfig):
    corpus_dir: str = "corpora/cv-corpus/en"  # the language folder with clips/ and the .tsv files
    language: str = "en"  # for spelling out numbers
    data_dir: str = "data/commonvoice"
    min_char_count: int = 10
    max_duration: float = 20.0


SCHEMA = CommonVoiceConfig


class CorpusError(FileNotFoundError):
    """The Common Voice folder is missing or not in the release layout."""


def tsv_items(root: Path, split: str) -> list[Item]:
    path = root / f"{split}.tsv"
    if not path.exists():
        raise CorpusError(f"Common Voice split not found: {path} (corpus_dir must hold clips/ and {split}.tsv)")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or not {"path", "sentence"} <= set(reader.fieldnames):
            raise CorpusError(f"{path}: expected columns client_id, path, sentence, ...; got {reader.fieldnames}")
        return [Item(Path(r["path"]).stem, root / "clips" / r["path"], r.get("sentence") or "",
                     speaker=r.get("client_id")) for r in reader]


def prepare_stage(cfg: CommonVoiceConfig) -> None:
    root, data = Path(cfg.corpus_dir), Path(cfg.data_dir)
    items = {s: tsv_items(root, s) for s in SPLITS}
    counts = Counter(c for it in items["train"] for c in normalize_text(it.text, cfg.language) if c != " ")
    charset = {c for c, n in counts.items() if n >= cfg.min_char_count} | {" "}
    rare = {c: n for c, n in sorted(counts.items()) if n < cfg.min_char_count}
    report = {"language": cfg.language, "characters": "".join(sorted(charset)), "rare_characters": rare}
    for split in SPLITS:
        limit = cfg.max_duration if split == "train" else float("inf")
        report[split] = prepare_split(items[split], data, split, charset=charset, max_duration=limit,
                                      lang=cfg.language)
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2, ensure_ascii=False))


def stages(cfg: CommonVoiceConfig) -> list[Stage]:
    root = Path(cfg.corpus_dir)
    prepare = Stage("prepare", lambda: prepare_stage(cfg), inputs=[root / f"{s}.tsv" for s in SPLITS],
                    outputs=cfg.paths.manifests(SPLITS) + [cfg.paths.lm_text],
                    config={"corpus": str(root), "language": cfg.language, "min_char_count": cfg.min_char_count,
                            "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
