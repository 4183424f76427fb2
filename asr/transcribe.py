"""Transcribing audio files with a trained model: `asr transcribe --model CKPT AUDIO...`."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from .audio import AudioError, is_silent, load_audio
from .inference import Recognizer


def transcribe_files(recognizer: Recognizer, paths: Sequence[str | Path]) -> list[dict]:
    """One dict per file: path, text, duration, processing seconds, and error when unreadable."""
    results = []
    for path in paths:
        t0 = time.time()
        try:
            wave = load_audio(path, recognizer.sample_rate)
        except AudioError as e:
            results.append({"path": str(path), "text": None, "error": str(e)})
            continue
        text = "" if is_silent(wave) else recognizer.transcribe([wave])[0]
        row = {"path": str(path), "text": text, "duration": round(len(wave) / recognizer.sample_rate, 3),
               "processing_seconds": round(time.time() - t0, 4)}
        if is_silent(wave):
            row["warning"] = "silent audio"
        results.append(row)
    return results
