"""int8 inference (asr.quantization) and calibrated word confidence (asr.confidence, `asr calibrate`) on a model
trained here until it transcribes its sentences partly right, through the real CLI."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.confidence import Calibration, expected_calibration_error
from conftest import ROOT, TINY, TRAIN_VOICES, SENTENCES, make_corpus, run_cli


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A tiny model trained 80 epochs on 12 sentences of one voice: most words right, some wrong (8-13% WER)."""
    root = tmp_path_factory.mktemp("learned")
    manifest = make_corpus(root, TRAIN_VOICES[:1], SENTENCES, "train")
    overrides = [o for o in TINY if not o.startswith("train.warmup_steps")] + ["train.warmup_steps=10", "train.lr=5e-3"]
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={root / 'exp'}",
                   f"data.train_manifest={manifest}", f"data.dev_manifest={manifest}", "train.epochs=80", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "exp" / "best.pt", manifest


def test_int8_inference_keeps_the_float32_word_error_rate(learned, tmp_path):
    """`asr evaluate --int8` against float32 on the model's 60 words: within 2 words (one word is 1.7 points here,
    and one frame that quantisation tips, a space say, can cost two: 0.133 against 0.100 in one run); and on the
    finer measure, the two models' most likely label agrees on at least 99% of the frames."""
    from asr.audio import load_audio
    from asr.inference import Recognizer
    from asr.manifest import read_manifest

    model, manifest = learned
    results = {}
    for name, extra in (("float32", []), ("int8", ["--int8"])):
        proc = run_cli("evaluate", "--model", str(model), "--manifest", str(manifest), "--device", "cpu",
                       "--json", str(tmp_path / f"{name}.json"), *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["float32"]["precision"] == "float32" and results["int8"]["precision"] == "int8"
    assert results["float32"]["wer"] < 0.3, results["float32"]  # the model learned most of its sentences
    utts = read_manifest(manifest)
    words = sum(len(u.text.split()) for u in utts)
    assert abs(results["int8"]["wer"] - results["float32"]["wer"]) * words <= 2 + 1e-9, (results["int8"]["wer"],
                                                                                         results["float32"]["wer"])
    waves = [load_audio(u.audio_filepath) for u in utts]
    best = [torch.cat([lp.argmax(-1) for lp in Recognizer(model, device="cpu", int8=int8).log_probs(waves)])
            for int8 in (False, True)]
    assert len(best[0]) > 700 and (best[0] == best[1]).float().mean() >= 0.99  # 1 frame of 761 in one run


def test_calibrate_writes_a_calibration_that_transcribe_and_the_server_use(learned):
    model, manifest = learned
    wav = json.loads(manifest.read_text().splitlines()[0])["audio_filepath"]
    wav = str((manifest.parent / wav).resolve()) if not wav.startswith("/") else wav
    raw = run_cli("transcribe", "--model", str(model), wav, "--format", "json", "--word-timestamps")
    proc = run_cli("calibrate", "--model", str(model), "--manifest", str(manifest))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "expected calibration error" in proc.stdout
    cal = json.loads((model.parent / "calibration.json").read_text())
    assert 0 <= cal["ece_raw"] <= 1 and 0 <= cal["ece_calibrated_held_out"] <= 1 and cal["words"] > 20
    assert (model.parent / "calibration.png").stat().st_size > 1000
    after = run_cli("transcribe", "--model", str(model), wav, "--format", "json", "--word-timestamps")
    before_words, after_words = json.loads(raw.stdout)["words"], json.loads(after.stdout)["words"]
    assert [w["word"] for w in before_words] == [w["word"] for w in after_words]
    expected = Calibration(cal["a"], cal["b"])([w["confidence"] for w in before_words])
    assert [w["confidence"] for w in after_words] == pytest.approx(expected, abs=2e-3)
    (model.parent / "calibration.json").unlink()


@settings(max_examples=25, deadline=None)
@given(st.floats(0.2, 5.0), st.floats(-2.0, 2.0), st.integers(0, 10_000))
def test_platt_scaling_recovers_a_logistic_truth(a, b, seed):
    """Words right with probability sigmoid(a logit(s) + b): the fit finds a, b and cuts the ECE of raw s."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.02, 0.98, 4000)
    p = 1 / (1 + np.exp(-(a * np.log(s / (1 - s)) + b)))
    y = rng.uniform(size=s.size) < p
    cal = Calibration.fit(s.tolist(), y.tolist())
    assert cal.a == pytest.approx(a, abs=0.35 + 0.15 * a) and cal.b == pytest.approx(b, abs=0.35)
    ece_fit, _ = expected_calibration_error(cal(s.tolist()), y.tolist())
    ece_raw, bins = expected_calibration_error(s.tolist(), y.tolist())
    assert ece_fit <= ece_raw + 0.02 and ece_fit < 0.06
    assert sum(b["count"] for b in bins) == s.size
