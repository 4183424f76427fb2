"""Games' speech clips as a corpus: characters held out whole, clips decoded once to FLAC at the model rate.

asr.queen and asr.sky each read their game's own formats into lines (clip, text, speaker); what they then do is
the same and lives here: check the held-out characters, put each clip in its character's split, decode it (or
reuse the FLAC an earlier run decoded at this rate), and write the manifests with every rejection counted.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_write
from .fork_pool import fork_map
from .prepare import Item, prepare_split

DECODE_PROCESSES = min(2, os.cpu_count() or 1)  # MP3 decoding, resampling and FLAC encoding: 1.9x on 2 cores


@dataclass(frozen=True)
class Clip:
    id: str  # utterance id, e.g. fotaq-020006J1
    file: str  # FLAC file name under the audio folder
    text: str
    speaker: str
    source: str  # the game's name for the clip, for error rows
    decode: Callable[[int], np.ndarray]  # the clip's audio at a sample rate; raises the game's error if unreadable


def split_of(speaker: str, dev_speakers: Sequence[str], test_speakers: Sequence[str]) -> str:
    return "test" if speaker in test_speakers else "dev" if speaker in dev_speakers else "train"


def check_held_out(dev_speakers: Sequence[str], test_speakers: Sequence[str], known: set[str], where: str,
                   error: type[Exception]) -> None:
    """Dev and test characters disjoint and all present in the game."""
    if set(dev_speakers) & set(test_speakers):
        raise error(f"characters both in dev and test: {sorted(set(dev_speakers) & set(test_speakers))}")
    unknown = sorted(set(dev_speakers) - known | set(test_speakers) - known)
    if unknown:
        raise error(f"held-out characters not in {where}: {unknown}; characters: {sorted(known)}")


def write_splits(clips: Sequence[Clip], data: Path, audio_dir: Path, sample_rate: int, dev_speakers: Sequence[str],
                 test_speakers: Sequence[str], names: dict[str, str], max_duration: float, limit: int,
                 error: type[Exception]) -> tuple[dict, dict[str, str]]:
    """Manifests `names[split]` of the clips (the first `limit` of each split; 0: all): their report (with each
    manifest's characters) and the clips' inventory rows (see clip_status). Clips that will not decode are
    rejected rows naming the clip; training clips past `max_duration` are rejected too, dev and test keep all."""
    chosen: dict[str, list[Clip]] = {split: [] for split in names}
    for clip in clips:
        split = split_of(clip.speaker, dev_speakers, test_speakers)
        if not limit or len(chosen[split]) < limit:
            chosen[split].append(clip)
    todo = [clip for split in names for clip in chosen[split]]
    paths = [audio_dir / str(sample_rate) / f"{clip.file}.flac" for clip in todo]
    errors = fork_map(_decode_to_flac, (todo, paths, sample_rate, error), range(len(todo)), DECODE_PROCESSES,
                      chunksize=64)
    items: dict[str, list[Item]] = {split: [] for split in names}
    failed: dict[str, list[tuple[str, str, str]]] = {split: [] for split in names}
    for clip, path, err in zip(todo, paths, errors):
        split = split_of(clip.speaker, dev_speakers, test_speakers)
        if err:
            failed[split].append((clip.id, f"unreadable audio: {err}", clip.source))
        else:
            items[split].append(Item(clip.id, path, clip.text, speaker=clip.speaker))
    report = {split: prepare_split(items[split], data, name, max_duration=max_duration if split == "train"
                                   else float("inf"), extra_rejected=failed[split])
              for split, name in names.items()}
    report["speakers"] = speakers_by_split((clip.speaker for clip in clips), names, dev_speakers, test_speakers)
    used = {it.id for split in items for it in items[split]}
    return report, clip_status(clips, data, names, dev_speakers, test_speakers, used, limit)


def _decode_to_flac(shared: tuple, i: int) -> str | None:
    """Clip i decoded and written as FLAC at the model rate (kept if an earlier run wrote it); its error, if any."""
    clips, paths, sample_rate, error = shared
    if paths[i].exists():
        return None
    try:
        wave = clips[i].decode(sample_rate)
    except error as e:
        return str(e)
    with atomic_write(paths[i], "wb") as f:
        sf.write(f, wave, sample_rate, format="FLAC", subtype="PCM_16")
    return None


def speakers_by_split(speakers: Iterable[str], names: dict[str, str], dev_speakers: Sequence[str],
                      test_speakers: Sequence[str]) -> dict[str, list[str]]:
    """Each manifest's characters."""
    speakers = set(speakers)
    return {names[s]: sorted(x for x in speakers if split_of(x, dev_speakers, test_speakers) == s) for s in names}


def clip_status(clips: Iterable[Clip], data: Path, names: dict[str, str], dev_speakers: Sequence[str],
                test_speakers: Sequence[str], used: set[str], limit: int) -> dict[str, str]:
    """Inventory rows (status, detail, text) of the transcribed clips by their game name: their manifest, rejected
    with the reason prepare_split gave (read back from rejected/<name>.tsv), or unused beyond `limit`."""
    clips = list(clips)
    source = {clip.id: clip.source for clip in clips}
    status = {}
    for name in names.values():
        for row in (data / "rejected" / f"{name}.tsv").read_text().splitlines()[1:]:
            clip_id, reason = row.split("\t")[:2]
            status[source.get(clip_id, clip_id)] = f"rejected\t{reason}"
    for clip in clips:
        split = split_of(clip.speaker, dev_speakers, test_speakers)
        status.setdefault(clip.source, f"{names[split]}\t{clip.speaker}\t{clip.text}" if clip.id in used
                          else f"unused\tbeyond limit={limit}")
    return status
