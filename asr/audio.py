"""Audio loading: any format libsndfile reads (ffmpeg as a fallback), mixed to mono, resampled.

Every failure names the file: a training run on thousands of files must say which one is bad.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """The file is missing, unreadable, empty or holds non-finite samples."""


def _read_ffmpeg(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path}: libsndfile cannot read this format and ffmpeg is not installed")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", str(offset)]
    if duration is not None:
        cmd += ["-t", str(duration)]
    cmd += ["-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise AudioError(f"{path}: cannot decode ({proc.stderr.decode(errors='replace').strip()[-200:]})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), SAMPLE_RATE


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Samples (float32, mono) and native sample rate of `path`, from `offset` for `duration` seconds."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            start = int(round(offset * sr))
            if start > f.frames:
                raise AudioError(f"{path}: offset {offset}s is past the end ({f.frames / sr:.2f}s)")
            f.seek(start)
            frames = -1 if duration is None else int(round(duration * sr))
            audio = f.read(frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        audio, sr = _read_ffmpeg(path, offset, duration)
        audio = audio[:, None]
    except (RuntimeError, ValueError) as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    return audio.mean(axis=1), sr


def read_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Samples (float32, mono) and sample rate of an encoded file held in memory (an upload), nothing written to
    disk: libsndfile, else ffmpeg through a pipe. Errors name the file as `name`."""
    if not data:
        raise AudioError(f"{name}: empty file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return f.read(dtype="float32", always_2d=True).mean(axis=1), f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        pass
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{name}: libsndfile cannot read this format and ffmpeg is not installed")
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar",
                           str(SAMPLE_RATE), "-"], input=data, capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise AudioError(f"{name}: cannot decode ({proc.stderr.decode(errors='replace').strip()[-200:]})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), SAMPLE_RATE


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, offset: float = 0.0,
               duration: float | None = None) -> np.ndarray:
    """Mono float32 waveform of `path` at `sample_rate`; raises AudioError naming the file. An image (a text
    line for a model of `features.kind=image`) comes as the signal of its columns (asr.images)."""
    from . import images

    if images.is_image(path):
        return images.load_line_image(path, sample_rate)
    return checked(*read_audio(path, offset, duration), sample_rate, path)


def checked(audio: np.ndarray, sr: int, sample_rate: int, name: str | Path) -> np.ndarray:
    """`audio` at `sr` checked (samples, finite, a plausible rate) and resampled to `sample_rate`."""
    if audio.size == 0:
        raise AudioError(f"{name}: no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    if not 1000 <= sr <= 768000:
        raise AudioError(f"{name}: implausible sample rate {sr} Hz in its header (damaged file?)")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
        if audio.size == 0:
            raise AudioError(f"{name}: {sr} Hz audio too short to give one sample at {sample_rate} Hz")
    return audio


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the peak level is below `threshold_db` dBFS (nothing a model could hear)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return peak <= 10 ** (threshold_db / 20)


def load_utterances(utts, sample_rate: int = SAMPLE_RATE) -> tuple[list[np.ndarray | None], dict[str, str]]:
    """Waveforms of manifest utterances (None where unreadable) and {utterance id: reason} of those that failed."""
    waves, failed = [], {}
    for u in utts:
        try:
            waves.append(load_audio(u.audio_filepath, sample_rate, u.offset, u.duration if u.offset else None))
        except AudioError as e:
            failed[u.id] = str(e)
            waves.append(None)
    return waves, failed
