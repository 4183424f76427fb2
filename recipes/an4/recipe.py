"""an4: CMU's AN4 census database (alphanumeric, ~1 h), deepspeech.pytorch's classic sanity set.

    <corpus_dir>/an4/wav/an4_clstk/<speaker>/<file>.raw|.sph|.wav      (training)
    <corpus_dir>/an4/wav/an4test_clstk/<speaker>/<file>.raw|.sph|.wav  (test)
    <corpus_dir>/an4/etc/an4_{train,test}.fileids      e.g. "fash/an251-fash-b"
    <corpus_dir>/an4/etc/an4_{train,test}.transcription e.g. "<s> YES </s> (an251-fash-b)"

.raw files are headerless 16 kHz 16-bit big-endian PCM; they are converted to FLAC under data_dir.
AN4 has no dev set: `dev_speakers` training speakers are held out for it.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from asr.atomic import write_text_atomic
from asr.prepare import Item, prepare_split, write_lm_text
from asr.recipe import Stage
from asr.recipe_stages import RecipeConfig, corpus_stages

LINE = re.compile(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^)]+)\)\s*$")


@dataclass
class AN4Config(RecipeConfig):
    corpus_dir: str = "corpora"  # the folder that holds an4/
    data_dir: str = "data/an4"
    dev_speakers: int = 4
    seed: int = 0
    max_duration: float = 20.0


SCHEMA = AN4Config


class CorpusError(FileNotFoundError):
    """AN4 is missing or not in CMU's layout."""


def _audio(folder: Path, fileid: str) -> Path:
    for ext in (".wav", ".flac", ".sph", ".raw"):
        if (folder / f"{fileid}{ext}").exists():
            return folder / f"{fileid}{ext}"
    return folder / f"{fileid}.raw"


def list_items(root: Path, part: str, data: Path) -> tuple[list[Item], list[tuple[str, str, str]]]:
    """Items of an4_{part}; raw audio converted to FLAC; (items, rejected rows for unparseable lines)."""
    etc = root / "an4" / "etc"
    folder = root / "an4" / "wav" / ("an4_clstk" if part == "train" else "an4test_clstk")
    fileids_path, trans_path = etc / f"an4_{part}.fileids", etc / f"an4_{part}.transcription"
    for p in (fileids_path, trans_path, folder):
        if not p.exists():
            raise CorpusError(f"AN4 file not found: {p} (corpus_dir must hold the an4/ folder from CMU)")
    fileids = [x.strip() for x in fileids_path.read_text().splitlines() if x.strip()]
    lines = [x for x in trans_path.read_text().splitlines() if x.strip()]
    if len(fileids) != len(lines):
        raise CorpusError(f"{fileids_path.name} lists {len(fileids)} files but {trans_path.name} "
                          f"{len(lines)} transcripts")
    items, rejected = [], []
    for fileid, line in zip(fileids, lines, strict=True):
        m = LINE.match(line.strip())
        utt_id = Path(fileid).name
        if not m:
            rejected.append((utt_id, "unparseable transcription line", line[:80]))
            continue
        audio = _audio(folder, fileid)
        if audio.suffix == ".raw" and audio.exists():
            flac = data / "audio" / part / f"{fileid}.flac"
            if not flac.exists():
                flac.parent.mkdir(parents=True, exist_ok=True)
                try:
                    pcm, rate = sf.read(str(audio), format="RAW", samplerate=16000, channels=1, subtype="PCM_16",
                                        endian="BIG")
                    sf.write(str(flac), pcm, rate)
                except (RuntimeError, sf.LibsndfileError) as e:
                    rejected.append((utt_id, f"unreadable audio: {e}", str(audio)))
                    continue
            audio = flac
        items.append(Item(utt_id, audio, m.group(1), speaker=Path(fileid).parts[0]))
    return items, rejected


def prepare_stage(cfg: AN4Config) -> None:
    root, data = Path(cfg.corpus_dir), Path(cfg.data_dir)
    train, bad_train = list_items(root, "train", data)
    test, bad_test = list_items(root, "test", data)
    speakers = sorted({it.speaker for it in train})
    dev_speakers = set(random.Random(cfg.seed).sample(speakers, min(cfg.dev_speakers, max(len(speakers) - 1, 0))))
    report = {"dev_speakers": sorted(dev_speakers),
              "train": prepare_split([i for i in train if i.speaker not in dev_speakers], data, "train",
                                     max_duration=cfg.max_duration, extra_rejected=bad_train),
              "dev": prepare_split([i for i in train if i.speaker in dev_speakers], data, "dev",
                                   max_duration=float("inf")),
              "test": prepare_split(test, data, "test", max_duration=float("inf"), extra_rejected=bad_test)}
    report["lm_text_sentences"] = write_lm_text(data, "train")
    write_text_atomic(data / "prepare_report.json", json.dumps(report, indent=2))


def stages(cfg: AN4Config) -> list[Stage]:
    root = Path(cfg.corpus_dir)
    etc = root / "an4" / "etc"
    prepare = Stage("prepare", lambda: prepare_stage(cfg),
                    inputs=[etc / f"an4_{p}.{k}" for p in ("train", "test") for k in ("fileids", "transcription")],
                    outputs=cfg.paths.manifests(("train", "dev", "test")) + [cfg.paths.lm_text],
                    config={"corpus": str(root), "dev_speakers": cfg.dev_speakers, "seed": cfg.seed,
                            "max_duration": cfg.max_duration, "data_dir": cfg.data_dir})
    return corpus_stages(cfg, prepare)
