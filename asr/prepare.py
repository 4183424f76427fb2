"""Turning a corpus's own listing into manifests: every item checked, every rejection counted.

Recipes find (id, audio, transcript) items in their corpus's layout; `prepare_split` checks
each one (audio present and readable, transcript non-empty and in the character set, duration
within limits), writes the manifest and a rejected-items file, and returns the counts.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .atomic import atomic_write, write_text_atomic
from .audio import AudioError, read_audio
from .manifest import Utterance, write_manifest
from .recipe_paths import RecipePaths
from .text import normalize_text

log = logging.getLogger("asr.prepare")
ENGLISH = set("abcdefghijklmnopqrstuvwxyz' ")


@dataclass
class Item:
    id: str
    audio: Path
    text: str
    speaker: str | None = None
    offset: float = 0.0
    duration: float | None = None  # known from the corpus (segments); else read from the file


def audio_duration(path: Path) -> float:
    """Seconds of audio in `path` (header only when libsndfile reads it, else a full decode)."""
    try:
        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    except (RuntimeError, sf.LibsndfileError):
        pass
    audio, rate = read_audio(path)
    return len(audio) / rate


def check_item(item: Item, charset: set[str] | None, max_duration: float, durations: dict,
               lang: str = "en") -> tuple[Utterance | None, str]:
    """(utterance, "") or (None, reason)."""
    text = normalize_text(item.text, lang)
    if not text:
        return None, "empty transcript"
    if charset is not None:
        bad = sorted({c for c in text if c not in charset})
        if bad:
            return None, f"characters outside the set: {''.join(bad)}"
    if not item.audio.exists():
        return None, "missing audio"
    if item.duration is None:
        if item.audio not in durations:
            try:
                durations[item.audio] = audio_duration(item.audio)
            except (AudioError, RuntimeError, OSError) as e:
                return None, f"unreadable audio: {str(e)[:120]}"
        duration = durations[item.audio]
    else:
        duration = item.duration
        if item.audio not in durations:  # a segment: the file must still be readable and long enough
            try:
                durations[item.audio] = audio_duration(item.audio)
            except (AudioError, RuntimeError, OSError) as e:
                return None, f"unreadable audio: {str(e)[:120]}"
        if item.offset + duration > durations[item.audio] + 0.05:
            return None, "segment beyond the end of the audio"
    if duration <= 0:
        return None, "empty audio"
    if duration > max_duration:
        return None, f"too long (> {max_duration:g} s)"
    return Utterance(audio_filepath=str(item.audio.resolve()), duration=round(duration, 3), text=text,
                     offset=item.offset, speaker=item.speaker, id=item.id), ""


def prepare_split(items: Iterable[Item], data_dir: str | Path, split: str, charset: set[str] | None = ENGLISH,
                  max_duration: float = 35.0, lang: str = "en", extra_rejected: Iterable[tuple[str, str, str]] = ()) -> dict:
    """Check `items`, write manifests/<split>.jsonl and rejected/<split>.tsv; return the split's report."""
    data_dir = Path(data_dir)
    utts, rejected, durations = [], list(extra_rejected), {}
    for item in items:
        utt, reason = check_item(item, charset, max_duration, durations, lang)
        if utt is None:
            rejected.append((item.id, reason, str(item.audio)))
        else:
            utts.append(utt)
    write_manifest(RecipePaths(data_dir).manifest(split), utts, relative_to_manifest=True)
    with atomic_write(data_dir / "rejected" / f"{split}.tsv") as f:
        f.write("id\treason\taudio\n")
        for row in rejected:
            f.write("\t".join(row) + "\n")
    reasons = Counter(r.split(":")[0] for _, r, _ in rejected)
    report = {"utterances": len(utts), "hours": round(sum(u.duration for u in utts) / 3600, 3),
              "speakers": len({u.speaker for u in utts if u.speaker}), "rejected": dict(reasons),
              "rejected_total": len(rejected)}
    log.info(f"prepared {split}: {len(utts)} utterances, {report['hours']} h, {report['speakers']} speakers; "
             f"rejected {len(rejected)} {dict(reasons) if reasons else ''}")
    for utt_id, reason, audio in rejected[:5]:
        log.warning(f"  rejected {utt_id}: {reason} ({audio})")
    if len(rejected) > 5:
        log.warning(f"  ... {len(rejected) - 5} more in {data_dir / 'rejected' / f'{split}.tsv'}")
    return report


def write_lm_text(data_dir: str | Path, split: str = "train") -> int:
    """The LM text: the distinct transcripts of `split` (the recipe's in-domain LM text)."""
    paths = RecipePaths(Path(data_dir))
    texts = sorted({json.loads(line)["text"] for line in paths.manifest(split).open()})
    write_text_atomic(paths.lm_text, "\n".join(texts) + "\n")
    return len(texts)
