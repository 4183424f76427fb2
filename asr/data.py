"""Training data: utterances from a manifest, batched by duration, padded for the model.

Batches are formed from utterances of similar duration (little padding), capped in
utterances and audio seconds. SortaGrad: the first epoch visits batches shortest first.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch
from torch.utils.data import Dataset, Sampler

from .audio import AudioError, load_audio
from .manifest import Utterance
from .text import Vocabulary

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


class UtteranceDataset(Dataset):
    """Loads one utterance's audio and encodes its (normalised) transcript."""

    def __init__(self, utterances: Sequence[Utterance], vocab: Vocabulary, sample_rate: int,
                 speed_perturb: Sequence[float] = (), seed: int = 0):
        self.utterances = list(utterances)
        self.vocab = vocab
        self.sample_rate = sample_rate
        self.speed_perturb = list(speed_perturb)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        utt = self.utterances[index]
        try:
            wave = load_audio(utt.audio_filepath, self.sample_rate, utt.offset,
                              utt.duration if utt.offset else None)
        except AudioError as e:
            return {"id": utt.id, "error": str(e)}
        if self.speed_perturb:
            factor = random.Random(f"{self.seed}:{self.epoch}:{index}").choice(self.speed_perturb)
            if factor != 1.0:  # faster speech = fewer samples at the same rate (pitch changes too, as in Kaldi)
                wave = soxr.resample(wave, self.sample_rate * factor, self.sample_rate).astype(np.float32)
        return {"id": utt.id, "wave": wave, "targets": self.vocab.encode(utt.text, utt.id), "text": utt.text,
                "duration": len(wave) / self.sample_rate}


def collate(items: list[dict]) -> Batch:
    """Pad waveforms and targets; items that failed to load are reported in `failed`."""
    ok = [it for it in items if "error" not in it]
    failed = [(it["id"], it["error"]) for it in items if "error" in it]
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


class BucketBatchSampler(Sampler[list[int]]):
    """Duration-bucketed batches, shuffled each epoch; sorted (SortaGrad) in the first epoch.

    With `world` > 1 (data parallel), rank r takes batches r, r + world, ... of the epoch's order,
    which is padded by repeating its first batches so that every rank gets the same number.
    """

    def __init__(self, durations: Sequence[float], max_utterances: int, max_seconds: float = 0.0,
                 sortagrad: bool = True, seed: int = 0, rank: int = 0, world: int = 1):
        self.batches = make_batches(durations, max_utterances, max_seconds)
        self.sortagrad = sortagrad
        self.seed = seed
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    @property
    def per_rank(self) -> int:
        """Batches each rank gets per epoch."""
        return -(-len(self.batches) // self.world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start `epoch`, leaving out this rank's first `skip` batches (resuming inside an epoch)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        if not (self.sortagrad and self.epoch == 0):
            random.Random(self.seed + self.epoch).shuffle(order)
        order += order[: self.per_rank * self.world - len(order)]
        mine = order[self.rank::self.world][self.skip:]
        return iter([list(self.batches[i]) for i in mine])
