"""Transcripts as files: plain text, SubRip (.srt), WebVTT (.vtt), TSV, JSON and OpenAI's verbose JSON.

One writer per format, shared by `asr transcribe --format` and `asr serve`'s `response_format`. Each takes a
transcription row as `asr.transcribe.transcribe_files` makes it: text, duration, segments (start, end, text) and,
when word times were asked for, words (word, start, end[, confidence]).
"""
from __future__ import annotations

import json

FORMATS = ("text", "json", "verbose_json", "srt", "vtt", "tsv")


def _clock(seconds: float, decimal: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def _spoken(row: dict) -> list[dict]:
    return [seg for seg in row.get("segments", []) if seg.get("text")]


def to_text(row: dict) -> str:
    return (row.get("text") or "") + "\n"


def to_srt(row: dict) -> str:
    """SubRip: numbered cues, one per spoken segment."""
    cues = [f"{i}\n{_clock(seg['start'], ',')} --> {_clock(seg['end'], ',')}\n{seg['text']}\n"
            for i, seg in enumerate(_spoken(row), 1)]
    return "\n".join(cues)


def to_vtt(row: dict) -> str:
    """WebVTT: a header, then one cue per spoken segment."""
    cues = [f"{_clock(seg['start'], '.')} --> {_clock(seg['end'], '.')}\n{seg['text']}\n" for seg in _spoken(row)]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_tsv(row: dict) -> str:
    """start, end (milliseconds, as whisper writes them) and text of each spoken segment, with a header."""
    lines = ["start\tend\ttext"] + [f"{int(round(seg['start'] * 1000))}\t{int(round(seg['end'] * 1000))}\t"
                                    f"{seg['text']}" for seg in _spoken(row)]
    return "\n".join(lines) + "\n"


def verbose(row: dict, language: str) -> dict:
    """OpenAI's verbose_json shape: task, language, duration, text, segments and (when timed) words."""
    segments = [{"id": i, "seek": 0, "start": seg["start"], "end": seg["end"], "text": seg["text"],
                 "tokens": [], "temperature": 0.0, "avg_logprob": seg.get("avg_logprob", 0.0),
                 "compression_ratio": 1.0, "no_speech_prob": seg.get("no_speech_prob", 0.0)}
                for i, seg in enumerate(_spoken(row))]
    out = {"task": "transcribe", "language": language, "duration": row.get("duration", 0.0),
           "text": row.get("text") or "", "segments": segments}
    if "words" in row:
        out["words"] = row["words"]
    return out


def to_json(row: dict) -> str:
    return json.dumps({"text": row.get("text") or ""}, ensure_ascii=False) + "\n"


def to_verbose_json(row: dict, language: str = "en") -> str:
    return json.dumps(verbose(row, language), ensure_ascii=False) + "\n"


def render(row: dict, fmt: str, language: str = "en") -> str:
    """`row` in format `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "verbose_json":
        return to_verbose_json(row, language)
    return {"text": to_text, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}[fmt](row)
