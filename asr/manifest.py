"""JSON Lines manifests with NeMo's keys: audio_filepath, duration, text [, offset, speaker, id, pseudo_label].

Relative audio paths are resolved against the manifest's own folder, so a corpus
folder can be moved as a whole. `pseudo_label` marks a transcript that teachers wrote instead of people
(asr.pseudo_label): such utterances may train a model, never score one.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .atomic import atomic_write


class ManifestError(ValueError):
    """One or more manifest lines are invalid; the message lists them by line number."""


@dataclass
class Utterance:
    audio_filepath: str
    duration: float
    text: str
    offset: float = 0.0
    speaker: Optional[str] = None
    id: Optional[str] = None
    pseudo_label: Optional[str] = None  # the teachers whose transcript `text` is (None: people's)

    def __post_init__(self) -> None:
        if self.id is None:
            stem = Path(self.audio_filepath).stem
            self.id = stem if not self.offset else f"{stem}_{self.offset:.2f}"

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None and not (k == "offset" and v == 0.0)}
        return json.dumps(data, ensure_ascii=False)


_REQUIRED = {"audio_filepath": str, "duration": (int, float), "text": str}
_OPTIONAL = {"offset": (int, float), "speaker": (str, int), "id": (str, int), "pseudo_label": str}


def _check_line(data: object) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, types in _REQUIRED.items():
        if key not in data:
            return f"missing key {key!r}"
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            return f"key {key!r} has type {type(data[key]).__name__}"
    for key, types in _OPTIONAL.items():
        if key in data and data[key] is not None and not isinstance(data[key], types):
            return f"key {key!r} has type {type(data[key]).__name__}"
    if not math.isfinite(data["duration"]) or data["duration"] <= 0:
        return f"duration {data['duration']!r} is not a positive number"
    if data.get("offset") is not None and (not math.isfinite(data["offset"]) or data["offset"] < 0):
        return f"offset {data['offset']!r} is negative"
    if not data["audio_filepath"]:
        return "empty audio_filepath"
    return None


def read_manifest(path: str | Path, scoring: bool = False) -> list[Utterance]:
    """Load and validate every line; raise ManifestError listing all bad lines. With `scoring` (a dev or test
    set) pseudo-labelled utterances are refused too (`check_human_transcripts`)."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    utterances, errors, linenos = [], [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"line {lineno}: invalid JSON ({e.msg})")
                continue
            problem = _check_line(data)
            if problem:
                errors.append(f"line {lineno}: {problem}")
                continue
            audio = Path(data["audio_filepath"])
            if not audio.is_absolute():
                audio = path.parent / audio
            linenos.append(lineno)
            utterances.append(Utterance(
                audio_filepath=str(audio), duration=float(data["duration"]), text=data["text"],
                offset=float(data.get("offset") or 0.0),
                speaker=None if data.get("speaker") is None else str(data["speaker"]),
                id=None if data.get("id") is None else str(data["id"]),
                pseudo_label=data.get("pseudo_label") or None,
            ))
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise ManifestError(f"{path}: {len(errors)} invalid line(s):\n  {shown}")
    seen: dict[str, list[int]] = {}
    for u, lineno in zip(utterances, linenos, strict=True):
        seen.setdefault(u.id, []).append(lineno)
    dups = [f"id {i!r} on lines {', '.join(map(str, n))}" for i, n in seen.items() if len(n) > 1]
    if dups:
        raise ManifestError(f"{path}: {len(dups)} duplicate utterance id(s): " + "; ".join(dups[:10]))
    if scoring:
        check_human_transcripts(utterances, path)
    return utterances


def write_manifest(path: str | Path, utterances: Iterable[Utterance], relative_to_manifest: bool = False) -> None:
    """Write `utterances` (atomically); optionally with audio paths relative to the manifest folder."""
    path = Path(path)
    with atomic_write(path) as f:
        for u in utterances:
            if relative_to_manifest:
                rel = os.path.relpath(Path(u.audio_filepath).resolve(), path.parent.resolve())
                u = Utterance(**{**asdict(u), "audio_filepath": rel})
            f.write(u.to_json() + "\n")


def check_human_transcripts(utts: Iterable[Utterance], name: str | Path) -> None:
    """Refuse a dev or test set holding pseudo-labels: scored against a teacher's transcripts, a model would
    measure its agreement with the teacher, not its accuracy."""
    pseudo = [u.id for u in utts if u.pseudo_label]
    if pseudo:
        raise ManifestError(f"{name}: {len(pseudo)} utterance(s) with pseudo-labels ({', '.join(pseudo[:5])}"
                            f"{', ...' if len(pseudo) > 5 else ''}): dev and test sets are scored against people's "
                            "transcripts only; pseudo-labels may only train")
