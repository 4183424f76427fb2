from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.config import FeatureConfig, ModelConfig, load_config
from asr.model import DeepSpeech2, _ChannelsLastGrad
from conftest import training_pass

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=15, deadline=None)
@given(conv_layers=st.integers(1, 3), stride=st.integers(1, 3),
       lengths=st.lists(st.integers(400, 16000), min_size=1, max_size=4),
       rnn=st.sampled_from(["gru", "lstm"]), bidir=st.booleans(),
       rate_window=st.sampled_from([(16000, 20.0), (16000, 25.0), (22050, 20.0), (8000, 25.0), (22050, 25.0)]))
def test_output_lengths_match_outputs(conv_layers, stride, lengths, rnn, bidir, rate_window):
    cfg = ModelConfig(conv_layers=conv_layers, conv_channels=4, conv_time_stride=stride, rnn_type=rnn,
                      rnn_layers=2, rnn_hidden=16, bidirectional=bidir, lookahead=0 if bidir else 3)
    rate, window_ms = rate_window  # 22.05 kHz x 20 or 25 ms: odd windows (441, 551 samples)
    features = FeatureConfig(kind="logmel", n_mels=32, sample_rate=rate, window_ms=window_ms)
    model = DeepSpeech2(cfg, features, 10).eval()
    hop = model.frontend.hop_length
    lengths = lengths + [hop * (lengths[0] // hop + 1)]  # a multiple of the hop: where odd windows lose a frame
    waves = torch.randn(len(lengths), max(lengths))
    lens = torch.tensor(lengths)
    with torch.no_grad():
        lp, out_lens = model(waves, lens)
    frames = model.frontend.frame_lengths(lens)
    assert torch.equal(out_lens, model.output_lengths(frames))
    assert lp.shape[1] == int(out_lens.max())
    # the model's own geometry: output frames span time_stride feature frames of frame_seconds
    assert model.time_stride == stride  # the later convs stride in frequency only
    assert model.frame_seconds == pytest.approx(hop * model.time_stride / rate)
    long = int(lens.max())
    assert abs(int(out_lens.max()) * model.frame_seconds - long / rate) <= model.frame_seconds + window_ms / 1000
    # every valid frame is a distribution; padded frames carry no information
    probs = lp.exp().sum(-1)
    for i, n in enumerate(out_lens.tolist()):
        assert torch.allclose(probs[i, :n], torch.ones(n), atol=1e-4)


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = DeepSpeech2(ModelConfig(conv_channels=4, rnn_hidden=32, rnn_layers=2), FeatureConfig(), 12).eval()
    a, b = torch.randn(8000), torch.randn(12000)
    waves = torch.zeros(2, 12000)
    waves[0, :8000], waves[1] = a, b
    with torch.no_grad():
        lp, lens = model(waves, torch.tensor([8000, 12000]))
        alone, alone_lens = model(a[None], torch.tensor([8000]))
    assert lens[0] == alone_lens[0]
    torch.testing.assert_close(lp[0, : lens[0]], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset, low, high", [("tiny", 0.8e6, 2e6), ("small", 2e6, 5e6), ("medium", 15e6, 40e6),
                                               ("paper", 80e6, 130e6)])
def test_presets_sizes(preset, low, high):
    cfg = load_config(ROOT / "conf" / f"ds2_{preset}.yaml", ["exp_dir=x", "data.train_manifest=a", "data.dev_manifest=b"])
    with torch.device("meta"):
        n = DeepSpeech2(cfg.model, cfg.features, 29).num_parameters()
    assert low <= n <= high


def test_gradients_reach_all_parameters():
    model = DeepSpeech2(ModelConfig(conv_channels=4, rnn_hidden=16, rnn_layers=2, rnn_type="lstm"), FeatureConfig(), 6)
    lp, lens = model(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    lp[0, : lens[0]].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiled_features_and_conv_match_eager():
    """train.compile: same outputs and gradients as eager for two batch shapes, same parameter names."""
    torch.manual_seed(0)
    cfg = ModelConfig(conv_channels=4, rnn_hidden=16, rnn_layers=1)
    eager = DeepSpeech2(cfg, FeatureConfig(kind="logmel", n_mels=32), 8)
    compiled = DeepSpeech2(cfg, FeatureConfig(kind="logmel", n_mels=32), 8)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_features_and_conv()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for lengths in ([9000, 6000], [12000, 11000, 4000]):
        waves = torch.randn(len(lengths), max(lengths)) * 0.1
        lens = torch.tensor(lengths)
        grads = []
        for model in (eager, compiled):
            model.zero_grad()
            lp, _ = model(waves, lens)
            lp[:, :, 1:].sum().backward()
            grads.append(model.conv.layers[0].weight.grad.clone())
            if model is eager:
                expected = lp.detach()
        torch.testing.assert_close(lp.detach(), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(grads[1], grads[0], atol=1e-3, rtol=1e-3)


def test_channels_last_convs_train_like_contiguous_ones():
    """Float32 training runs the convs channels-last, with the gradient handed back to them channels-last too
    (BatchNorm's backward is 5x slower over mixed layouts): same outputs and gradients as contiguous convs."""
    torch.manual_seed(0)
    cfg = ModelConfig(conv_kind="subsample", conv_layers=2, conv_channels=8, rnn_hidden=16, rnn_layers=1)
    model = DeepSpeech2(cfg, FeatureConfig(kind="logmel", n_mels=32), 8).train()
    waves, lens = torch.randn(3, 9000) * 0.1, torch.tensor([9000, 5000, 7000])
    results = []
    for channels_last in (False, True):
        model.use_channels_last(channels_last)
        lp, grads = training_pass(model, waves, lens, lambda lp: lp[:, :, 1:].sum())
        results.append([lp.detach()] + grads)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the reshape after the convs hands back a contiguous gradient; the convs get it channels-last
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(5, 2, 12)
    (_ChannelsLastGrad.apply(x).reshape(2, 12, 5).permute(2, 0, 1) * w).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, w.permute(1, 2, 0).reshape(2, 3, 4, 5))


def test_head_bias_starts_at_the_training_label_prior():
    """`model.head_bias`: the head's softmax at the start is the training labels' distribution over the output
    frames (add-one for labels no utterance has; the blank takes the frames no label does); without it the head
    has no bias, so checkpoints from before the key load unchanged."""
    from asr.features import num_frames
    from asr.manifest import Utterance
    from asr.text import CharVocabulary
    from asr.training import init_head_prior

    cfg = load_config(ROOT / "conf" / "ds2_tiny.yaml", ["exp_dir=x", "data.train_manifest=a", "data.dev_manifest=b",
                                                        "model.head_bias=true"])
    utts = [Utterance("a.wav", 2.0, "abba", id="u1"), Utterance("b.wav", 3.0, "a cab", id="u2")]
    vocab = CharVocabulary.build([u.text for u in utts] + ["d"], "speech")
    model = DeepSpeech2(cfg.model, cfg.features, len(vocab))
    init_head_prior(model, vocab, utts, cfg)
    prior = model.head[1].bias.detach().double().softmax(0)
    frames = model.output_lengths(torch.tensor([num_frames(s, cfg.features) for s in (2.0, 3.0)])).sum().item()
    assert 150 < frames < 170  # 5 s of 10-ms frames, strided 3 by the tiny preset's convs
    counts = {label: 1 + "abbaa cab".count(label) for label in vocab.labels[1:]}
    assert prior[vocab.blank].item() == pytest.approx((frames - sum(counts.values())) / frames)
    for label, n in counts.items():
        assert prior[vocab.labels.index(label)].item() == pytest.approx(n / frames)
    assert counts["d"] == 1 and counts["a"] == 5
    plain = DeepSpeech2(ModelConfig(), FeatureConfig(), len(vocab))
    assert plain.head[1].bias is None and "head.1.bias" not in plain.state_dict()


def test_intermediate_ctc_head_reads_its_layer_and_inference_ignores_it():
    """`model.inter_ctc_layer=k`: a second CTC head reads RNN layer k in training, so its log-probs depend on layers
    up to k only and its loss trains those layers, not the ones above; inference returns the final head's output
    alone, the same as with intermediate=False; models without the key have no such head."""
    from asr.config import ConfigError, validate

    torch.manual_seed(0)
    cfg = ModelConfig(conv_kind="subsample", conv_channels=8, rnn_layers=3, rnn_hidden=32, inter_ctc_layer=2)
    model = DeepSpeech2(cfg, FeatureConfig(kind="logmel", n_mels=40), 12).train()
    waves, lengths = torch.randn(3, 12000), torch.tensor([12000, 9000, 5000])
    feats, frames = model.frontend(waves, lengths)
    final, out_lens, inter = model.forward_features(feats, frames, intermediate=True)
    assert inter.shape == final.shape and torch.allclose(inter.exp().sum(-1), torch.ones(inter.shape[:2]))
    with torch.no_grad():
        model.rnns[2].rnn.weight_hh_l0.add_(1.0)  # the layer above the intermediate head
    final2, _, inter2 = model.forward_features(feats, frames, intermediate=True)
    valid = torch.arange(final.shape[1])[None, :] < out_lens[:, None]
    assert torch.equal(inter2[valid], inter[valid]) and not torch.allclose(final2[valid], final[valid])
    model.zero_grad()
    inter2[valid].logsumexp(-1).sum().backward()  # any loss of the intermediate head alone
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["rnns.1.rnn.weight_hh_l0"].abs().sum() > 0 and grads["inter_head.1.weight"].abs().sum() > 0
    assert all(grads[n] is None for n in grads if n.startswith(("rnns.2.", "head.")))
    model.eval()
    with torch.no_grad():
        outputs = model(waves, lengths)
        assert len(outputs) == 2
        assert torch.equal(outputs[0], model.forward_features(*model.frontend(waves, lengths))[0])
    assert not any(k.startswith("inter_head") for k in DeepSpeech2(ModelConfig(), FeatureConfig(), 12).state_dict())
    for layer in (3, -1):
        with pytest.raises(ConfigError, match="model.inter_ctc_layer"):
            validate(load_config(ROOT / "conf" / "ds2_tiny.yaml", ["exp_dir=x", "data.train_manifest=a",
                                                                  "data.dev_manifest=b", "model.rnn_layers=3",
                                                                  f"model.inter_ctc_layer={layer}"]))
