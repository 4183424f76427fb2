import librosa
import numpy as np
import pytest
import torch

from asr.config import ConfigError, FeatureConfig, SpecAugmentConfig, check_feature_bins
from asr.features import FeatureExtractor, num_frames, spec_augment, vtlp
from asr.synthesis import Voice, synthesize


@pytest.fixture(scope="module")
def waves():
    a, sr = synthesize("the quick brown fox", Voice("espeak", "en-us+m1"))
    b, _ = synthesize("jumps", Voice("espeak", "en+f2"))
    import soxr
    return [soxr.resample(a, sr, 16000).astype(np.float32), soxr.resample(b, sr, 16000).astype(np.float32)]


def batch(waves):
    lengths = torch.tensor([len(w) for w in waves])
    x = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        x[i, : len(w)] = torch.from_numpy(w)
    return x, lengths


def test_spectrogram_matches_librosa(waves):
    fe = FeatureExtractor(FeatureConfig(kind="spectrogram", normalize="none"))
    assert fe.num_features == 161  # DeepSpeech2: 20 ms window at 16 kHz
    feats, frames = fe(*batch(waves))
    for i, w in enumerate(waves):
        ref = np.log1p(np.abs(librosa.stft(w, n_fft=320, hop_length=160, win_length=320,
                                           window=librosa.filters.get_window("hamming", 320, fftbins=False),
                                           center=True, pad_mode="constant")))
        assert frames[i] == ref.shape[1] == num_frames(len(w) / 16000, fe.cfg)
        np.testing.assert_allclose(feats[i, :, : frames[i]].numpy(), ref, atol=2e-4)
        assert torch.all(feats[i, :, frames[i]:] == 0)


def test_logmel_matches_librosa(waves):
    fe = FeatureExtractor(FeatureConfig(kind="logmel", n_mels=64, window_ms=25, normalize="none"))
    feats, frames = fe(*batch(waves))
    w = waves[1]
    mel = librosa.feature.melspectrogram(y=w, sr=16000, n_fft=400, hop_length=160, win_length=400,
                                         window=librosa.filters.get_window("hamming", 400, fftbins=False),
                                         center=True, pad_mode="constant", power=2.0, n_mels=64)
    np.testing.assert_allclose(feats[1, :, : frames[1]].numpy(), np.log(mel + 1e-6), atol=2e-3, rtol=1e-3)


def test_f_max_keeps_the_band_below_it(waves):
    """features.f_max=5500: what audio recorded at 11,025 Hz holds, for full-band and band-limited audio alike."""
    mel = FeatureExtractor(FeatureConfig(kind="logmel", n_mels=64, window_ms=25, normalize="none", f_max=5500))
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=64, fmax=5500)
    np.testing.assert_allclose(mel.mel_fb.numpy(), ref, rtol=1e-5, atol=1e-7)
    assert mel.mel_fb[:, 400 * 5600 // 16000:].abs().max() == 0  # nothing above 5.5 kHz reaches a mel bin
    lin = FeatureExtractor(FeatureConfig(kind="spectrogram", normalize="none", f_max=5500))
    full = FeatureExtractor(FeatureConfig(kind="spectrogram", normalize="none"))
    assert lin.num_features == 111  # bins of 50 Hz, 0-5,500 Hz
    (a, _), (b, _) = lin(*batch(waves)), full(*batch(waves))
    assert a.shape[1] == 111 and torch.equal(a, b[:, :111])
    with pytest.raises(ConfigError, match="features.f_max"):
        check_feature_bins(FeatureConfig(f_max=9000))


def test_batch_equals_single(waves):
    fe = FeatureExtractor(FeatureConfig(normalize="utterance"))
    feats, frames = fe(*batch(waves))
    alone, f1 = fe(*batch(waves[1:]))
    torch.testing.assert_close(feats[1, :, : frames[1]], alone[0, :, : f1[0]], atol=1e-4, rtol=1e-4)


def test_utterance_normalisation_ignores_padding(waves):
    fe = FeatureExtractor(FeatureConfig(normalize="utterance"))
    feats, frames = fe(*batch(waves))
    valid = feats[1, :, : frames[1]]
    assert valid.mean(dim=1).abs().max() < 1e-4
    assert torch.allclose(valid.std(dim=1, unbiased=False), torch.ones(161), atol=1e-2)


def test_global_normalisation(waves):
    fe = FeatureExtractor(FeatureConfig(normalize="global"))
    fe.fit_global_stats([batch(waves)])
    feats, frames = fe(*batch(waves))
    pooled = torch.cat([feats[i, :, : frames[i]] for i in range(2)], dim=1)
    assert pooled.mean(dim=1).abs().max() < 1e-3
    assert "global_mean" in fe.state_dict()


def test_spec_augment_masks():
    feats = torch.ones(4, 80, 200)
    lengths = torch.tensor([200, 150, 100, 50])
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    out = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(0))
    assert out.shape == feats.shape
    zero_bins = (out == 0).all(dim=2).sum(dim=1)
    assert (zero_bins <= 20).all() and zero_bins.sum() > 0
    assert ((out[0] == 0).all(dim=0).sum()) <= 2 * 20
    assert torch.equal(spec_augment(feats, lengths, SpecAugmentConfig(enabled=False)), feats)


def test_spec_augment_starts_at_its_epoch(corpus, tmp_path):
    """`specaugment.from_epoch=2` trains epoch 1 exactly as without SpecAugment, and masks epoch 2."""
    import csv

    from asr.config import load_config
    from asr.training import train
    from conftest import ROOT, TINY

    def losses(name, *overrides):
        cfg = load_config(ROOT / "conf" / "ds2_tiny.yaml", [
            f"exp_dir={tmp_path / name}", f"data.train_manifest={corpus['train']}",
            f"data.dev_manifest={corpus['dev']}", "train.epochs=2", *TINY, *overrides])
        train(cfg)
        with open(tmp_path / name / "metrics.csv") as f:
            return [float(row["train_loss"]) for row in csv.DictReader(f)]

    off = losses("off", "specaugment.enabled=false")
    later = losses("later", "specaugment.enabled=true", "specaugment.from_epoch=2")
    always = losses("always", "specaugment.enabled=true", "specaugment.from_epoch=1")
    assert later[0] == off[0] and later[1] != off[1]
    assert always[0] != off[0]


def test_vtlp_moves_formants_and_keeps_the_band():
    f = 201
    mag = torch.zeros(3, f, 4)
    mag[:, 50] = 1.0  # a single partial at a quarter of Nyquist
    mag[:, -1] = 2.0  # and one at Nyquist
    out = vtlp(mag, torch.tensor([0.9, 1.0, 1.12]))
    assert torch.allclose(out[1], mag[1], atol=1e-4)  # factor 1 changes nothing
    peaks = out[:, : f // 2].argmax(dim=1)[:, 0].tolist()
    assert peaks == [45, 50, 56]  # below the knee a partial moves by the factor
    assert torch.allclose(out[:, -1], torch.full((3, 4), 2.0), atol=1e-4)  # Nyquist stays Nyquist
    assert (out >= 0).all() and torch.isfinite(out).all()


def test_vtlp_changes_training_features_only_when_asked(waves):
    fe = FeatureExtractor(FeatureConfig(kind="logmel", n_mels=40, window_ms=25))
    x, lengths = batch(waves)
    plain, frames = fe(x, lengths)
    same, _ = fe(x, lengths, torch.ones(2))
    warped, warped_frames = fe(x, lengths, torch.tensor([0.9, 1.1]))
    assert torch.allclose(plain, same, atol=1e-3)
    assert torch.equal(frames, warped_frames)
    assert (warped - plain).abs().mean() > 0.05
    # the spectral centroid of each utterance moves with its factor
    lin = FeatureExtractor(FeatureConfig(kind="spectrogram", normalize="none"))
    bins = torch.arange(lin.num_features, dtype=torch.float32)[None, :, None]

    def centroid(alpha):
        s = torch.expm1(lin(x, lengths, torch.full((2,), alpha))[0])
        return ((s * bins).sum(dim=(1, 2)) / s.sum(dim=(1, 2)))

    assert (centroid(1.1) > centroid(1.0)).all() and (centroid(0.9) < centroid(1.0)).all()


@pytest.mark.parametrize("rate,window_ms", [(22050, 20.0), (16000, 25.0625), (16000, 20.0)])
def test_frame_counts_match_stft_for_odd_and_even_windows(rate, window_ms):
    """A 441-sample window (22.05 kHz, 20 ms) gives one frame less than an even one when the length is a
    multiple of the hop: the counts the model and the label-length check use must follow."""
    from asr.config import ModelConfig
    from asr.model import DeepSpeech2

    cfg = FeatureConfig(kind="spectrogram", sample_rate=rate, window_ms=window_ms, normalize="none")
    fe = FeatureExtractor(cfg)
    hop = fe.hop_length
    for n in (hop * 50, hop * 50 + 1, hop * 50 - 1, hop * 50 + hop // 2):
        stft = librosa.stft(np.zeros(n, np.float32), n_fft=fe.n_fft, hop_length=hop, center=True, pad_mode="constant")
        assert int(fe.frame_lengths(torch.tensor([n]))) == stft.shape[1] == num_frames(n / rate, cfg)
    model = DeepSpeech2(ModelConfig(rnn_hidden=32, rnn_layers=1, conv_channels=4), cfg, 29).eval()
    lengths = torch.tensor([hop * 50, hop * 40 + 3])
    lp, out_lens = model(torch.randn(2, hop * 50), lengths)
    assert lp.shape[1] == int(out_lens.max()) and torch.isfinite(lp).all()
