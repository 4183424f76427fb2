"""Streaming recognition (asr.streaming): chunk by chunk equals the whole-utterance forward pass."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.audio import load_audio
from asr.checkpoint import save_checkpoint
from asr.config import FeatureConfig, ModelConfig, load_config, to_dict
from asr.decoding import greedy_decode
from asr.model import DeepSpeech2
from asr.streaming import Stream, StreamingError
from asr.text import CharVocabulary
from conftest import ROOT, run_cli

VOCAB = CharVocabulary(list(" abcdefghijklmnopqrstuvwxyz'"))


def _model(seed: int, feature_kind="logmel", normalize="global", **model) -> DeepSpeech2:
    """A random model with non-trivial BatchNorm and normalisation statistics, in eval mode."""
    torch.manual_seed(seed)
    cfg = dict(bidirectional=False, rnn_hidden=32, rnn_layers=2, conv_channels=4)
    cfg.update(model)
    m = DeepSpeech2(ModelConfig(**cfg), FeatureConfig(kind=feature_kind, n_mels=40, normalize=normalize), len(VOCAB))
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    m.frontend.global_mean.normal_()
    m.frontend.global_std.uniform_(0.5, 2.0)
    return m.eval()


def _whole(model: DeepSpeech2, wave: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        lp, lens = model(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    return lp[0, : lens[0]]


def _streamed(model: DeepSpeech2, wave: np.ndarray, chunks: list[int]) -> tuple[torch.Tensor, Stream]:
    stream, pieces, pos, i = Stream(model, VOCAB), [], 0, 0
    while pos < len(wave):
        size = chunks[i % len(chunks)]
        pieces.append(stream.accept(wave[pos: pos + size]))
        pos, i = pos + size, i + 1
    pieces.append(stream.finish())
    return torch.cat(pieces), stream


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), samples=st.integers(400, 24_000),
       chunks=st.lists(st.integers(1, 5000), min_size=1, max_size=5),
       rnn_type=st.sampled_from(["gru", "lstm"]), lookahead=st.sampled_from([0, 1, 4]),
       conv=st.sampled_from([("ds2", 1), ("ds2", 2), ("ds2", 3), ("vgg", 2), ("vgg", 4), ("subsample", 2),
                             ("subsample", 3)]), stride=st.integers(1, 3),
       feature_kind=st.sampled_from(["logmel", "spectrogram"]), normalize=st.sampled_from(["global", "none"]))
def test_stream_equals_whole_utterance(seed, samples, chunks, rnn_type, lookahead, conv, stride,
                                       feature_kind, normalize):
    model = _model(seed, feature_kind, normalize, rnn_type=rnn_type, lookahead=lookahead, conv_kind=conv[0],
                   conv_layers=conv[1], conv_time_stride=stride)
    wave = np.random.default_rng(seed).standard_normal(samples).astype(np.float32) * 0.1
    ref = _whole(model, wave)
    got, stream = _streamed(model, wave, chunks)
    assert got.shape == ref.shape and stream.frames == len(ref)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    assert stream.text == greedy_decode(ref[None], torch.tensor([len(ref)]), VOCAB)[0]


def test_frames_are_emitted_once_their_right_context_has_arrived():
    model = _model(0, lookahead=2, conv_time_stride=2)
    wave = np.random.default_rng(0).standard_normal(32_000).astype(np.float32) * 0.1
    stream = Stream(model, VOCAB)
    rate, frame = 16_000, 0.02  # conv stride 2 x 10 ms hop
    emitted = 0
    for start in range(0, len(wave), 1600):  # 100 ms chunks
        emitted += len(stream.accept(wave[start: start + 1600]))
        heard = (start + 1600) / rate
        # every frame whose right context is in has come out; none earlier
        assert emitted == max(0, math.floor((heard - stream.right_context_seconds) / frame + 1e-9) + 1)
    assert emitted + len(stream.finish()) == len(_whole(model, wave))
    # two convs with 11-frame kernels (15 feature frames), half a 20-ms window, 2 output frames of lookahead
    assert stream.right_context_seconds == pytest.approx((15 * 160 + 160 + 2 * 2 * 160) / rate)


def test_reset_starts_a_new_utterance_and_misuse_is_refused():
    model = _model(1)
    a, b = (np.random.default_rng(s).standard_normal(9000).astype(np.float32) * 0.1 for s in (1, 2))
    stream = Stream(model, VOCAB)
    stream.accept(a)
    stream.finish()
    with pytest.raises(StreamingError, match="finished"):
        stream.accept(a)
    stream.reset()
    got = torch.cat([stream.accept(b), stream.finish()])
    assert torch.allclose(got, _whole(model, b), atol=1e-4)
    stream.reset()
    assert stream.finish().shape == (0, len(VOCAB)) and stream.text == ""
    with pytest.raises(StreamingError, match="mono"):
        Stream(model, VOCAB).accept(np.zeros((2, 100), np.float32))
    pcm = (b * 32768).round().clip(-32768, 32767).astype(np.int16)  # integer PCM is scaled like a WAV reader does
    ints, floats = Stream(model, VOCAB), Stream(model, VOCAB)
    got = torch.cat([ints.accept(pcm), ints.finish()])
    assert torch.allclose(got, torch.cat([floats.accept(pcm / 32768.0), floats.finish()]), atol=1e-5)


@pytest.mark.parametrize("change,message", [
    (dict(model=dict(bidirectional=True)), "bidirectional"),
    (dict(normalize="utterance"), "features.normalize=utterance"),
    (dict(train=True), "eval mode"),
])
def test_models_that_cannot_stream_say_why(change, message):
    model = _model(0, normalize=change.get("normalize", "global"), **change.get("model", {}))
    if change.get("train"):
        model.train()
    with pytest.raises(StreamingError, match=message):
        Stream(model, VOCAB)


def test_transcribe_cli_streams_a_trained_model(corpus, streaming_model, tmp_path):
    """conf/ds2_streaming.yaml trained briefly, streaming files through `asr transcribe`: the same text as the
    whole-file pass, partial transcripts that only grow, and a clear refusal for a bidirectional model."""
    exp = streaming_model
    wavs = [str(p) for p in sorted((corpus["root"] / "audio" / "dev").rglob("*.flac"))[:3]]
    whole = run_cli("transcribe", "--model", str(exp / "best.pt"), *wavs, "--format", "json")
    streamed = run_cli("transcribe", "--model", str(exp / "best.pt"), *wavs, "--format", "json",
                       "--stream-chunk-ms", "120")
    first_partials = json.loads(run_cli("transcribe", "--model", str(exp / "best.pt"), wavs[0], "--format", "json",
                                        "--stream-chunk-ms", "100").stdout)["streaming"]["partials"]
    assert whole.returncode == 0 and streamed.returncode == 0, streamed.stderr[-2000:]
    assert any(json.loads(line)["text"] for line in whole.stdout.splitlines())  # something to compare
    for w, s in zip(map(json.loads, whole.stdout.splitlines()), map(json.loads, streamed.stdout.splitlines())):
        assert s["path"] == w["path"] and s["text"] == w["text"] and s["duration"] == w["duration"]
        info = s["streaming"]
        assert info["chunk_seconds"] == 0.12 and 0.1 < info["right_context_seconds"] < 0.5
        seconds = [p["audio_seconds"] for p in info["partials"]]
        assert seconds == sorted(seconds) and seconds[-1] <= s["duration"] + 1e-3
        texts = [p["text"] for p in info["partials"]] + [s["text"]]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # greedy characters are only appended
    # live audio on stdin: raw 16-bit PCM through a pipe, partials printed as they come, the same final text
    pcm = (np.clip(load_audio(wavs[0], 16000), -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", "--model", str(exp / "best.pt"), "-",
                           "--stream-chunk-ms", "100", "--format", "json"], input=pcm, capture_output=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    partials, final = lines[:-1], lines[-1]
    assert all(p["partial"] and p["text"] for p in partials) and final["path"] == "-"
    assert final["text"] == json.loads(whole.stdout.splitlines()[0])["text"]
    assert final["duration"] == pytest.approx(len(pcm) / 2 / 16000, abs=1e-3)
    assert [p["text"] for p in partials] == [p["text"] for p in first_partials]  # 100 ms chunks both times
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), "-")
    assert proc.returncode == 2 and "needs --stream-chunk-ms" in proc.stderr
    cfg = load_config(ROOT / "conf" / "ds2_tiny.yaml", ["exp_dir=e", "data.train_manifest=t", "data.dev_manifest=d"])
    bidi = DeepSpeech2(cfg.model, cfg.features, len(VOCAB))
    save_checkpoint({"model": bidi.state_dict(), "config": to_dict(cfg), "labels": VOCAB.labels}, tmp_path / "bidi.pt")
    proc = run_cli("transcribe", "--model", str(tmp_path / "bidi.pt"), wavs[0], "--stream-chunk-ms", "100")
    assert proc.returncode == 2 and "cannot stream" in proc.stderr and "bidirectional" in proc.stderr
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), wavs[0], "--stream-chunk-ms", "5")
    assert proc.returncode == 2 and "at least 10 ms" in proc.stderr


def test_stream_with_a_beam_decoder_updates_its_text_and_ends_on_the_whole_utterance_search():
    from asr.decoding import CTCBeamDecoder

    model = _model(3, lookahead=2)
    wave = np.random.default_rng(3).standard_normal(30_000).astype(np.float32) * 0.1
    decoder = CTCBeamDecoder(VOCAB.labels, VOCAB.blank, beam_width=8, engine="python", frame_seconds=0.02)
    stream = Stream(model, VOCAB, decoder)
    texts = []
    for start in range(0, len(wave), 2400):
        stream.accept(wave[start: start + 2400])
        texts.append(stream.text)
    assert stream.hypothesis is None and any(texts)
    stream.finish()
    whole = decoder.nbest(_whole(model, wave).numpy(), 1)[0]
    assert stream.text == whole.text and stream.hypothesis.words == whole.words
    stream.reset()
    assert stream.text == "" and stream.hypothesis is None
