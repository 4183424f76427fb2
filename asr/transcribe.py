"""Transcribing audio files with a trained model: `asr transcribe --model CKPT AUDIO...`.

Long recordings are transcribed in pieces of at most `max_segment_seconds`, cut where the audio is quietest,
so a model trained on sentences can transcribe an hour-long file in bounded memory. A unidirectional model can
instead take a file, or live audio from a pipe, as a stream, chunk by chunk (asr.streaming), with partial transcripts
along the way.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .audio import AudioError, is_silent, load_audio
from .confidence import Calibration, raw_word_scores
from .decoding import Hypothesis
from .images import is_image
from .inference import Recognizer

DEFAULT_MAX_SEGMENT_SECONDS = 20.0


def split_at_pauses(wave: np.ndarray, sample_rate: int,
                    max_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS) -> list[tuple[int, int]]:
    """Contiguous (start, end) sample ranges covering `wave`, none longer than `max_seconds`.

    Each cut goes where the 100 ms mean energy is lowest in the last half of the allowed span (a pause,
    when there is one), and leaves at least a quarter span after it, so that no piece is a sliver.
    """
    if max_seconds < 1.0:
        raise ValueError(f"max_seconds must be at least 1, got {max_seconds}")
    n, limit, hop = len(wave), int(max_seconds * sample_rate), max(1, sample_rate // 100)
    if n <= limit:
        return [(0, n)]
    frames = n // hop
    energy = (np.asarray(wave[: frames * hop], dtype=np.float64).reshape(frames, hop) ** 2).mean(axis=1)
    smooth = np.convolve(energy, np.ones(10) / 10, mode="same")
    spans, start = [], 0
    while n - start > limit:
        lo = (start + limit // 2) // hop + 1
        hi = min(start + limit, n - limit // 4) // hop
        cut = (lo + int(np.argmin(smooth[lo:hi]))) * hop
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


def speech_spans(wave: np.ndarray, sample_rate: int,
                 max_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS) -> tuple[list[tuple[int, int]], list[int]]:
    """The pieces of `wave` (split_at_pauses) and the indices of those that are not silent (the model hears)."""
    spans = split_at_pauses(wave, sample_rate, max_seconds)
    return spans, [i for i, (s, e) in enumerate(spans) if not is_silent(wave[s:e])]


def assemble(spans: list[tuple[int, int]], heard: list[int], texts: list[str], sample_rate: int,
             hyps: list[Hypothesis] | None = None, log_probs: Sequence[torch.Tensor] = (),
             calibration: Calibration | None = None) -> dict:
    """text and segments (start, end, text) of a file from its pieces' transcripts; with `hyps`, words with start,
    end and confidence (raw word scores from `log_probs`, through `calibration` when given)."""
    segments = [{"start": round(s / sample_rate, 3), "end": round(e / sample_rate, 3), "text": ""} for s, e in spans]
    for i, text in zip(heard, texts):
        segments[i]["text"] = text
    row: dict = {"text": " ".join(seg["text"] for seg in segments if seg["text"]), "segments": segments}
    if hyps is not None:
        calibrate = calibration or Calibration()
        row["words"] = []
        for i, hyp, lp in zip(heard, hyps, log_probs):
            offset = spans[i][0] / sample_rate
            conf = calibrate(raw_word_scores(lp.numpy(), hyp.words))
            row["words"] += [{"word": w["word"], "start": round(offset + w["start"], 3),
                              "end": round(offset + w["end"], 3), "confidence": c} for w, c in zip(hyp.words, conf)]
    if not heard:
        row["warning"] = "silent audio"
    return row


def transcribe_stream(recognizer: Recognizer, chunks: Iterable[np.ndarray], word_timestamps: bool = False,
                      on_partial: Callable[[float, str], None] | None = None) -> dict:
    """Feed audio chunks to a stream as they come: the partial transcripts as they changed (each also passed to
    `on_partial(seconds, text)`; greedy, or the recognizer's beam search with its LM) and the final text."""
    stream = recognizer.stream()
    pieces, partials = [], []  # log-prob pieces: kept only for greedy word times
    for chunk in chunks:
        lp = stream.accept(chunk)
        if word_timestamps:
            pieces.append(lp)
        if stream.text != (partials[-1]["text"] if partials else ""):
            partials.append({"audio_seconds": round(stream.seconds, 3), "text": stream.text})
            if on_partial is not None:
                on_partial(stream.seconds, stream.text)
    pieces.append(stream.finish())
    row: dict = {"duration": round(stream.seconds, 3),
                 "streaming": {"right_context_seconds": round(stream.right_context_seconds, 3), "partials": partials}}
    row["text"] = stream.text
    if word_timestamps:
        hyp = stream.hypothesis or recognizer.hypotheses([torch.cat(pieces)])[0]
        row["words"] = [{"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
                        for w in hyp.words]
    return row


def pcm_chunks(source: BinaryIO, sample_rate: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Raw 16-bit little-endian mono PCM from `source` (a pipe, say from arecord or ffmpeg), in chunks as it arrives."""
    size = 2 * max(1, int(round(chunk_seconds * sample_rate)))
    rest = b""
    while True:
        data = source.read(size - len(rest))
        if not data:
            break
        rest += data
        if len(rest) >= size:
            yield np.frombuffer(rest, dtype="<i2").astype(np.float32) / 32768.0
            rest = b""
    if len(rest) >= 2:
        yield np.frombuffer(rest[: len(rest) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


def transcribe_pipe(recognizer: Recognizer, source: BinaryIO, chunk_seconds: float, word_timestamps: bool = False,
                    on_partial: Callable[[float, str], None] | None = None) -> dict:
    """Live audio from a pipe (raw 16-bit mono PCM at the model's rate) until it closes: partials go to `on_partial`
    as they change, and the returned row (path "-") holds the final transcript."""
    t0 = time.time()
    streamed = transcribe_stream(recognizer, pcm_chunks(source, recognizer.sample_rate, chunk_seconds),
                                 word_timestamps, on_partial)
    streamed["streaming"].pop("partials")  # already delivered, one by one
    streamed["streaming"]["chunk_seconds"] = chunk_seconds
    return {"path": "-", "text": streamed.pop("text"), "duration": streamed.pop("duration"),
            "processing_seconds": round(time.time() - t0, 4), **streamed}


def transcribe_files(recognizer: Recognizer, paths: Sequence[str | Path],
                     max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS, word_timestamps: bool = False,
                     stream_chunk_seconds: float | None = None) -> list[dict]:
    """One dict per file: path, text, duration, processing seconds and segments (start, end, text);
    words with start/end seconds when `word_timestamps`; error instead when the file is unreadable.
    With `stream_chunk_seconds`, each file runs through a stream in chunks (`transcribe_stream`)."""
    results = []
    rate = recognizer.sample_rate
    reads_images = recognizer.config.features.kind == "image"
    for path in paths:
        t0 = time.time()
        if is_image(path) != reads_images:
            kind = "an image" if is_image(path) else "not an image"
            results.append({"path": str(path), "text": None,
                            "error": f"{path}: {kind}, and the model reads {'text-line images' if reads_images else 'audio'}"})
            continue
        try:
            wave = load_audio(path, rate)
        except AudioError as e:
            results.append({"path": str(path), "text": None, "error": str(e)})
            continue
        if stream_chunk_seconds:
            chunk = max(1, int(round(stream_chunk_seconds * rate)))
            streamed = transcribe_stream(recognizer, (wave[i: i + chunk] for i in range(0, len(wave), chunk)),
                                         word_timestamps)
            row = {"path": str(path), "text": streamed.pop("text"), "duration": streamed.pop("duration"),
                   "processing_seconds": round(time.time() - t0, 4)}
            row["segments"] = [{"start": 0.0, "end": row["duration"], "text": row["text"]}]
            streamed["streaming"]["chunk_seconds"] = stream_chunk_seconds
            row.update(streamed)
            if is_silent(wave):
                row["warning"] = "silent audio"
            results.append(row)
            continue
        # a text-line image is one segment; audio is cut at pauses
        spans, heard = ([(0, len(wave))], [0]) if reads_images else speech_spans(wave, rate, max_segment_seconds)
        log_probs = recognizer.log_probs([wave[spans[i][0]: spans[i][1]] for i in heard]) if heard else []
        if word_timestamps:
            hyps = recognizer.hypotheses(log_probs)
            texts = [h.text for h in hyps]
        else:
            hyps, texts = None, recognizer.decode(log_probs)
        row = {"path": str(path), **assemble(spans, heard, texts, rate, hyps, log_probs, recognizer.calibration),
               "duration": round(len(wave) / rate, 3), "processing_seconds": round(time.time() - t0, 4)}
        results.append(row)
    return results
