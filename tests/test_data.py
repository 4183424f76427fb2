"""Training data: augmentation (speed, silence padding, concatenation, noise) and the duration-bucketed, rank-sharded batch sampler."""
import random

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError
from asr.data import BucketBatchSampler, NoiseMixer, UtteranceDataset, pad_with_silence
from asr.manifest import read_manifest
from asr.text import CharVocabulary


def test_noise_is_mixed_at_the_requested_snr_and_seeded(corpus, tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(str(noise_dir / "hum.wav"), (np.random.default_rng(0).normal(size=8000) * 0.1).astype(np.float32), 16000)
    utts = read_manifest(corpus["train"])[:4]
    vocab = CharVocabulary.build(u.text for u in utts)
    clean = UtteranceDataset(utts, vocab, 16000)
    noisy = UtteranceDataset(utts, vocab, 16000, seed=3, noise=NoiseMixer(noise_dir, 16000, prob=1.0, snr_db=[10, 10]))
    for i in range(len(utts)):
        a, b = clean[i]["wave"], noisy[i]["wave"]
        added = b - a
        snr = 10 * np.log10(np.mean(a ** 2) / np.mean(added ** 2))
        assert len(a) == len(b) and snr == pytest.approx(10.0, abs=0.01)
    assert np.array_equal(noisy[0]["wave"], noisy[0]["wave"])  # same epoch, same item: same noise
    first = noisy[0]["wave"]
    noisy.set_epoch(1)
    assert not np.array_equal(first, noisy[0]["wave"])
    with pytest.raises(AudioError, match="no audio files"):
        NoiseMixer(tmp_path / "empty_dir_that_is_missing", 16000)


def test_speed_perturbation_changes_duration(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, 16000)
    fast = UtteranceDataset(utts, vocab, 16000, speed_perturb=[1.1])
    for i in range(len(utts)):
        assert len(fast[i]["wave"]) == pytest.approx(len(plain[i]["wave"]) / 1.1, rel=0.01)


def test_silence_padding_keeps_the_speech_and_is_seeded(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, 16000)
    padded = UtteranceDataset(utts, vocab, 16000, seed=5, silence_pad=0.5, silence_pad_prob=1.0)
    for i in range(len(utts)):
        a, b = plain[i]["wave"], padded[i]["wave"]
        extra = len(b) - len(a)
        assert 0 <= extra <= 16000 and padded[i]["duration"] == pytest.approx(len(b) / 16000)
        # the speech is in there, intact under a noise floor no louder than -50 dBFS
        start = next(s for s in range(extra + 1) if np.max(np.abs(b[s: s + len(a)] - a)) < 10 ** (-50 / 20) * 6)
        rest = np.concatenate([b[:start], b[start + len(a):]])
        assert rest.size == 0 or 10 ** (-76 / 20) < np.sqrt(np.mean(rest ** 2)) < 10 ** (-49 / 20)
        assert np.array_equal(b, padded[i]["wave"])  # same epoch, same item: same padding
    never = UtteranceDataset(utts, vocab, 16000, silence_pad=0.5, silence_pad_prob=0.0)
    assert all(np.array_equal(never[i]["wave"], plain[i]["wave"]) for i in range(len(utts)))
    lengths = {len(pad_with_silence(np.zeros(100, np.float32), 16000, 1.0, random.Random(s))) for s in range(20)}
    assert len(lengths) > 10 and max(lengths) <= 100 + 32000


def test_concatenation_joins_two_utterances_after_a_pause_and_is_seeded(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, 16000)
    joined = UtteranceDataset(utts, vocab, 16000, seed=2, concat_prob=1.0)
    by_id = {u.id: i for i, u in enumerate(utts)}
    partners = []
    for i, u in enumerate(utts):
        item = joined[i]
        first, second = item["id"].split("+")
        j = by_id[second]
        partners.append(j)
        assert first == u.id and item["text"] == f"{u.text} {utts[j].text}"
        assert item["targets"] == vocab.encode(item["text"])
        a, b = plain[i]["wave"], plain[j]["wave"]
        wave = item["wave"]
        gap = len(wave) - len(a) - len(b)
        assert 1600 <= gap <= 12800  # a 0.1-0.8 s pause between them
        assert np.array_equal(wave[: len(a)], a) and np.array_equal(wave[len(a) + gap:], b)
        assert 10 ** (-76 / 20) < np.sqrt(np.mean(wave[len(a): len(a) + gap] ** 2)) < 10 ** (-49 / 20)
        assert np.array_equal(wave, joined[i]["wave"])  # same epoch, same item: same partner and pause
    joined.set_epoch(1)
    assert [by_id[joined[i]["id"].split("+")[1]] for i in range(len(utts))] != partners
    never = UtteranceDataset(utts, vocab, 16000, concat_prob=0.0)
    assert all(never[i]["id"] == u.id and np.array_equal(never[i]["wave"], plain[i]["wave"])
               for i, u in enumerate(utts))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sharded_sampler_covers_every_batch_equally(world):
    durations = [random.Random(i).uniform(1, 10) for i in range(53)]
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            s = BucketBatchSampler(durations, 4, seed=7, rank=rank, world=world)
            s.set_epoch(epoch)
            shards.append([tuple(b) for b in s])
        assert len({len(x) for x in shards}) == 1  # equal counts, so the gradient sync never waits forever
        every = {tuple(b) for b in BucketBatchSampler(durations, 4, seed=7).batches}
        assert set().union(*shards) == every  # nothing dropped; padding repeats at most world - 1 batches
        assert sum(len(x) for x in shards) - len(every) < world
        s = BucketBatchSampler(durations, 4, seed=7, rank=world - 1, world=world)
        s.set_epoch(epoch, skip=2)
        assert [tuple(b) for b in s] == shards[-1][2:]  # resuming inside an epoch
