"""Training data: utterances from a manifest, batched by duration, padded for the model.

Batches are formed from utterances of similar duration (little padding), capped in
utterances and audio seconds. SortaGrad: the first epoch visits batches shortest first.
An item is one utterance or, with concatenation on, a pair joined after a pause; pairs are
chosen per epoch before bucketing, so joined items are batched with items of their own length.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch
from torch.utils.data import Dataset, Sampler

from .audio import AudioError, load_audio
from .augment import Augmentation, quiet_noise
from .images import is_image, stretch
from .manifest import Utterance
from .text import Vocabulary

Item = int | tuple[int, int]  # a training item: one utterance's index, or two to join
JOIN_PAUSE = (0.1, 0.8)  # seconds of quiet noise between the two halves of a pair


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
    """Loads one utterance's audio (speed-perturbed, then through `augment`'s chain: asr.augment) and encodes its
    transcript."""

    def __init__(self, utterances: Sequence[Utterance], vocab: Vocabulary, sample_rate: int,
                 speed_perturb: Sequence[float] | Sequence[Sequence[float]] = (), seed: int = 0,
                 augment: Sequence[Augmentation] = ()):
        self.utterances = list(utterances)
        self.vocab = vocab
        self.sample_rate = sample_rate
        self.speeds = utterance_speeds(speed_perturb, len(self.utterances))  # see `utterance_speeds`
        self.seed = seed
        self.augment = list(augment)
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
        for augmentation in self.augment:
            wave = augmentation(wave, random.Random(f"{self.seed}:{self.epoch}:{first}:{augmentation.key}"))
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


@dataclass(frozen=True)
class EpochDraw:
    """What each epoch draws afresh from the training utterances, seeded by the sampler's seed and the epoch.

    `sources` (a source number per utterance; None: all one source) and their `weights`: each source's share of
    an epoch (see `weighted_indices`), training on several corpora at chosen proportions. `concat_prob`: the share
    of the epoch's utterances joined in pairs (see `join_pairs`). `speed_perturb`: the speeds drawn from (see
    `utterance_speeds`), by which the epoch's durations are bucketed: by the recorded ones, speeds of 0.9-1.1
    padded an epoch's batches with 10% more audio.
    """
    sources: Sequence[int] | None = None
    weights: Sequence[float] = (1.0,)
    concat_prob: float = 0.0
    speed_perturb: Sequence[float] | Sequence[Sequence[float]] = ()


class BucketBatchSampler(Sampler[list[Item]]):
    """Duration-bucketed batches, shuffled each epoch; sorted (SortaGrad) in the first epoch.

    Each epoch's items (which utterances, which joined in pairs, at which speed) follow `draw` (see `EpochDraw`).
    With `world` > 1 (data parallel), rank r takes batches r, r + world, ... of the epoch's order,
    which is padded by repeating its first batches so that every rank gets the same number.
    """

    def __init__(self, durations: Sequence[float], max_utterances: int, max_seconds: float = 0.0,
                 sortagrad: bool = True, seed: int = 0, rank: int = 0, world: int = 1, draw: EpochDraw = EpochDraw()):
        self.durations = list(durations)
        self.speeds = utterance_speeds(draw.speed_perturb, len(self.durations))  # see `utterance_speeds`
        self.perturbed = any(self.speeds)
        self.sources = list(draw.sources) if draw.sources is not None else [0] * len(self.durations)
        self.weights = list(draw.weights)
        if len(self.sources) != len(self.durations) or any(not 0 <= s < len(self.weights) for s in self.sources):
            raise ValueError("sources: one source number per utterance, each with a weight")
        # items (or their durations) change each epoch
        self.per_epoch = bool(draw.concat_prob or self.perturbed) or any(w != 1.0 for w in self.weights)
        self.max_utterances, self.max_seconds = max_utterances, max_seconds
        self.sortagrad = sortagrad
        self.seed = seed
        self.rank, self.world = rank, world
        self.concat_prob = draw.concat_prob
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
