"""The real `asr` command line, in subprocesses, on real synthesized speech."""
import csv
import json
import math
import platform
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.allocator import find_tcmalloc
from asr.audio import load_audio
from conftest import CORES, ROOT, THREADS, TINY, run_cli


def test_train_writes_experiment_folder(trained):
    exp, _, proc = trained
    for name in ("config.yaml", "vocab.json", "last.pt", "best.pt", "metrics.csv", "curves.png", "train.log", "rejected.tsv"):
        assert (exp / name).exists(), name
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["dev_wer"]) for r in rows) and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "parameters" in proc.stderr and "best checkpoint" in proc.stdout
    assert f"memory allocator: {'tcmalloc' if find_tcmalloc() else 'glibc malloc'}" in proc.stderr
    assert "model:\n" in (exp / "config.yaml").read_text()
    import torch

    isa = torch.backends.cpu.get_cpu_capability()
    assert f"compute: cpu, {THREADS} threads, torch kernels {isa}" in proc.stderr  # TINY trains in float32 (amp=off)
    assert "; float32; conv stack channels-last" in proc.stderr


def test_the_compute_line_names_each_kernel_library_held_to_avx2():
    """An AVX2 host is emulated only when ATen's, oneDNN's and MKL's kernels are all held to AVX2 (MKL's GEMMs
    ignore the other two: on an AMX Xeon its float32 peak fell from 360 to 231 GFLOP/s only with its own
    variable), and the log says which were."""
    import os
    import subprocess
    import sys

    code = ("import torch; from asr.training import describe_compute; "
            "print(describe_compute(torch.device('cpu'), torch.float32))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env.pop("MKL_ENABLE_INSTRUCTIONS", None)
    line = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "torch kernels AVX2, oneDNN limited to AVX2, oneDNN bf16" in line and "MKL" not in line
    env["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    line = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "torch kernels AVX2, oneDNN limited to AVX2, MKL limited to AVX2, oneDNN bf16 kernels" in line


def test_resume_continues(trained, tmp_path):
    import shutil

    shared, args, _ = trained
    exp = tmp_path / "exp"  # a copy: the other tests read the shared folder
    shutil.copytree(shared, exp)
    args = [f"exp_dir={exp}" if a.startswith("exp_dir=") else a for a in args]
    proc = run_cli(*[a if a != "train.epochs=2" else "train.epochs=3" for a in args], "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "epoch 3, step" in proc.stderr  # continues at epoch 3
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_time_budget_keeps_the_epochs_that_fit(corpus, tmp_path):
    """train.time_budget: after epoch 1 the run keeps the epochs that fit at its pace (here none: at least
    train.min_epochs), its cosine ends at the last of them, and the log, config.yaml and checkpoint say how many;
    the later epochs' check keeps the floor too; --resume keeps that length rather than the config's train.epochs."""
    import torch
    from omegaconf import OmegaConf

    exp = tmp_path / "exp"
    args = ["train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={exp}", f"data.train_manifest={corpus['train']}",
            f"data.dev_manifest={corpus['dev']}", "train.epochs=4", "train.time_budget=0.001", "train.min_epochs=3",
            *TINY]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.time_budget 0 s: epoch 1 took" in proc.stderr and "so 3 epochs of at most 4" in proc.stderr
    assert "epochs instead of" not in proc.stderr  # already at the floor: the later check cannot shorten it
    saved = OmegaConf.load(exp / "config.yaml").train
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and saved.epochs == 3
    assert float(rows[-1]["lr"]) == pytest.approx(saved.lr * saved.min_lr_ratio)  # the cosine ended at epoch 3
    last = torch.load(exp / "last.pt", weights_only=True)
    assert last["epochs"] == 3 and last["scheduler"]["lr_lambdas"][0]["total_steps"] == last["step"]
    assert last["spent"] > 0 and "spent" not in torch.load(exp / "best.pt", weights_only=True)
    proc = run_cli(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and len(list(csv.DictReader((exp / "metrics.csv").open()))) == 3


@settings(max_examples=300, deadline=None)
@given(budget=st.floats(60, 2000), done=st.integers(1, 7), planned=st.integers(1, 8), floor=st.integers(1, 4),
       paces=st.lists(st.floats(5, 400), min_size=8, max_size=8))
def test_a_run_that_slows_is_shortened_to_the_epochs_its_budget_holds(budget, done, planned, floor, paces):
    """After each later epoch the run keeps its planned length while the epochs left fit at the last epoch's pace
    (a tenth over the budget allowed), else the most that fit in the budget; never longer, never under its floor
    or the epochs done."""
    from asr.training import BUDGET_SLACK, epochs_within_budget

    planned = max(planned, done + 1, floor)  # after epoch 1 the plan is at least the floor
    spent, last = sum(paces[:done]), paces[done - 1]
    kept = epochs_within_budget(budget, spent, done, last, planned, floor)
    assert max(floor, done) <= kept <= planned
    if spent + (planned - done) * last <= budget * (1 + BUDGET_SLACK):
        assert kept == planned
    elif kept > max(floor, done):
        assert spent + (kept - done) * last <= budget < spent + (kept + 1 - done) * last


def test_the_time_budget_on_the_epyc_zen_4s_drifting_hour():
    """The 2026-12-08 default run (EPYC Zen 4): epoch 1 took 124 s, so 5 epochs of 660 s; then 139, 134, 155 s.
    Its fifth epoch still fits within the tenth's slack (whole run 19 min 45 s); a host that slowed to 166 s an
    epoch after a 131-s first one is cut to 4 epochs, and never below train.min_epochs."""
    from asr.training import epochs_within_budget

    assert [epochs_within_budget(660, sum([124, 139, 134, 155][:d]), d, [124, 139, 134, 155][d - 1], 5, 3)
            for d in (2, 3, 4)] == [5, 5, 5]
    assert epochs_within_budget(660, 131 + 166, 2, 166, 5, 3) == 4
    assert epochs_within_budget(660, 131 + 400, 2, 400, 5, 3) == 3


def test_evaluate_cli(trained, corpus, tmp_path):
    exp, _, _ = trained
    proc = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(corpus["dev"]),
                   "--json", str(tmp_path / "r.json"), "--out-dir", str(tmp_path / "dec"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WER" in proc.stdout and "CER" in proc.stdout and "sub" in proc.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["utterances"] == 6 and result["words"] > 0 and result["decoder"] == "greedy"
    assert set(result["word_errors"]) == {"substitutions", "deletions", "insertions", "hits"}
    rows = [json.loads(x) for x in (tmp_path / "dec" / "utterances.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all({"reference", "hypothesis", "errors", "alignment"} <= set(r) for r in rows)
    errs = sum(r["errors"]["substitutions"] + r["errors"]["deletions"] + r["errors"]["insertions"] for r in rows)
    assert errs == sum(result["word_errors"][k] for k in ("substitutions", "deletions", "insertions"))


def test_transcribe_cli(trained, corpus, tmp_path):
    exp, _, _ = trained
    wavs = sorted((corpus["root"] / "audio" / "dev").rglob("*.flac"))[:2]
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), *map(str, wavs), "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["path"] for r in rows] == list(map(str, wavs))
    assert all(isinstance(r["text"], str) and r["duration"] > 0.3 and r["processing_seconds"] > 0 for r in rows)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 16000)
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), str(wavs[0]), str(tmp_path / "missing.wav"),
                   str(tmp_path / "silent.wav"))
    assert proc.returncode == 1 and "missing.wav: file not found" in proc.stderr
    assert "silent.wav\tWARNING: silent audio" in proc.stderr and "1 of 3 files could not be transcribed" in proc.stderr
    assert proc.stdout.startswith(str(wavs[0]) + "\t") and f"{tmp_path / 'silent.wav'}\t\n" in proc.stdout


def test_transcribe_long_recording_in_pieces_cut_at_pauses(trained, corpus, tmp_path):
    exp, _, _ = trained
    waves = [load_audio(p, 16000) for p in sorted((corpus["root"] / "audio" / "dev").rglob("*.flac"))]
    pause = np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 1e-3  # 0.75 s, -60 dBFS
    parts, pauses, pos = [], [], 0
    for w in waves:
        parts += [w, pause]
        pauses.append(((pos + len(w)) / 16000, (pos + len(w) + len(pause)) / 16000))
        pos += len(w) + len(pause)
    sf.write(str(tmp_path / "long.wav"), np.concatenate(parts), 16000)
    duration = pos / 16000
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), str(tmp_path / "long.wav"), "--format", "json",
                   "--max-segment-seconds", "3", "--word-timestamps")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout)
    segs = row["segments"]
    assert len(segs) >= duration / 3 and row["duration"] == pytest.approx(duration, abs=1e-3)
    assert segs[0]["start"] == 0 and segs[-1]["end"] == pytest.approx(duration, abs=1e-3)
    assert all(s["end"] - s["start"] <= 3.0 and s["end"] == t["start"] for s, t in zip(segs, segs[1:]))
    for s in segs[:-1]:  # every cut in a pause between sentences, none inside a word
        assert any(a <= s["end"] <= b for a, b in pauses), (s["end"], pauses)
    assert row["text"] == " ".join(s["text"] for s in segs if s["text"])
    assert row["words"] and " ".join(w["word"] for w in row["words"]) == row["text"]
    starts = [w["start"] for w in row["words"]]
    assert starts == sorted(starts) and all(0 <= w["start"] < w["end"] <= duration + 0.1 for w in row["words"])
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), str(tmp_path / "long.wav"),
                   "--max-segment-seconds", "0.2")
    assert proc.returncode == 2 and "at least 1 second" in proc.stderr


def test_bad_training_data_is_reported(corpus, tmp_path):
    rows = [json.loads(x) for x in corpus["train"].read_text().splitlines()]
    for r in rows:  # absolute paths, so the manifest can live elsewhere
        r["audio_filepath"] = str((corpus["train"].parent / r["audio_filepath"]).resolve())
    rows[0]["audio_filepath"] = str(corpus["root"] / "audio" / "gone.flac")
    rows[1]["text"] = "word " * 200  # cannot fit the frames
    bad = tmp_path / "train.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={tmp_path / 'exp'}",
                   f"data.train_manifest={bad}", f"data.dev_manifest={corpus['dev']}", "train.max_steps=1",
                   "train.loss=torch", *TINY)  # PyTorch's CTC loss, kept for comparison
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "missing audio x1" in proc.stderr and "transcript longer than the frames allow x1" in proc.stderr
    rejected = (tmp_path / "exp" / "rejected.tsv").read_text()
    assert rows[0]["id"] in rejected and rows[1]["id"] in rejected

    oov = tmp_path / "oov.jsonl"
    rows[3]["text"] = "naïve café"
    oov.write_text("\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    vocab = tmp_path / "exp" / "vocab.json"
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={tmp_path / 'exp2'}",
                   f"data.train_manifest={oov}", f"data.dev_manifest={corpus['dev']}", f"data.vocabulary={vocab}", *TINY)
    assert proc.returncode == 2 and "outside the vocabulary" in proc.stderr and rows[3]["id"] in proc.stderr


def test_training_without_a_c_compiler_falls_back_to_nn_gru(corpus, tmp_path, monkeypatch):
    """asr.gru's gate kernels are compiled on first use; with no working compiler training says so and trains
    with nn.GRU instead of failing."""
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing built earlier to fall back on
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={tmp_path / 'exp'}",
                   f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", "train.max_steps=2",
                   *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "asr.gru's C kernels are unavailable, so the GRUs train as nn.GRU" in proc.stderr
    assert "building gru_kernel.c with false failed" in proc.stderr
    assert (tmp_path / "exp" / "last.pt").exists()


def test_config_error_is_clear(corpus, tmp_path):
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={tmp_path}", "train.lrr=1")
    assert proc.returncode == 2 and "train.lrr" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_stuck_on_the_blank_plateau_starts_again_with_the_next_seed(corpus, tmp_path):
    """A dev CER above train.plateau_dev_cer after epoch 1 (here any error at all) sets the attempt aside and
    trains again from scratch with seed + 1; the last allowed attempt runs to its end whatever its CER."""
    import torch

    exp = tmp_path / "exp"
    data = [f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}"]
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={exp}", *data, "train.epochs=1",
                   "train.seed=7", "train.plateau_restarts=1", "train.plateau_dev_cer=0.0001", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CTC's blank plateau: training again from scratch with train.seed=8 (restart 1 of at most 1)" in proc.stderr
    stuck = list(csv.DictReader((exp / "plateau-seed7" / "metrics.csv").open()))
    assert len(stuck) == 1 and float(stuck[0]["dev_cer"]) > 0.0001 and (exp / "plateau-seed7" / "best.pt").exists()
    assert len(list(csv.DictReader((exp / "metrics.csv").open()))) == 1
    assert torch.load(exp / "best.pt", weights_only=True)["config"]["train"]["seed"] == 8
    assert "seed: 8" in (exp / "config.yaml").read_text()


def test_synthetic_recipe_end_to_end(tmp_path):
    """The default recipe's stages on a few dozen utterances: synthesize, prepare, vocabulary, lm, train, tune,
    decode, voices, score."""
    overrides = [f"data_dir={tmp_path / 'data'}", f"exp_dir={tmp_path / 'exp'}", "synth.train_utterances=48",
                 "synth.dev_utterances=8", "synth.test_utterances=8", "synth.workers=1", "train.epochs=1",
                 "model.rnn_layers=2", "model.inter_ctc_layer=1", "model.rnn_hidden=32", "model.conv_channels=4",
                 "train.batch_size=8",
                 "lm.order=3", "lm.beam=8", "lm.alphas=[0.5,1.0]", "lm.betas=[0.0,1.0]", "people.limit=8", "sky.limit=8"]
    proc = run_cli("recipe", "run", "recipes/synthetic_en", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    # test_real: Debian's pocketsphinx-testdata (scripts/setup.sh installs it), people reading
    real = ["test_real"] if Path("/usr/share/pocketsphinx/test/data/librivox/transcription").exists() else []
    # test_people: the game's held-out characters (Debian's flight-of-the-amazon-queen, also from setup.sh)
    people = ["test_people"] if Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c").exists() else []
    # test_sky: Beneath a Steel Sky's held-out characters (Debian's beneath-a-steel-sky, also from setup.sh)
    people += ["test_sky"] if Path("/usr/share/scummvm/beneath-a-steel-sky/sky.dnr").exists() else []
    real += people
    assert set(results) == {"dev", "test", "test_pauses", *real, "provenance"}
    assert list(results)[: 1 + len(people)] == ["dev", *people]  # the WER table leads with people
    prov = results["provenance"]
    assert len(prov["config_sha256"]) == 64
    # the default trains on the games' training characters too (empty manifests without the games)
    assert set(prov["manifests_sha256"]) == {"train", "dev", "test", "test_pauses", *real, "train_people_train",
                                             "train_sky_train"}
    manifests = tmp_path / "data" / "manifests"
    for test_set, train_set in (("test_people", "people_train"), ("test_sky", "sky_train")):
        trained_on = (manifests / f"{train_set}.jsonl").read_text().splitlines()
        if test_set in people:
            assert results[test_set]["utterances"] == 8 and len(trained_on) == 8
            held_out = {json.loads(x)["speaker"] for x in (manifests / f"{test_set}.jsonl").read_text().splitlines()}
            assert not held_out & {json.loads(x)["speaker"] for x in trained_on}  # whole characters held out
        else:
            assert trained_on == []
    mixed = [json.loads(x)["id"] for x in (manifests / "dev_mixed.jsonl").read_text().splitlines()]
    assert mixed == [json.loads(x)["id"] for name in ("dev", "people_dev", "sky_dev")
                     for x in (manifests / f"{name}.jsonl").read_text().splitlines()]  # choose on voices and people
    english = (tmp_path / "data" / "english_text.txt").read_text().splitlines()
    scored = [json.loads(x)["text"] for name in ["dev", "test", *real, "people_dev", "sky_dev"]
              for x in (tmp_path / "data" / "manifests" / f"{name}.jsonl").read_text().splitlines()]
    assert len(english) > 10000 and not set(english) & set(scored)  # general English, no scored sentence
    assert prov["seed"] == 1234 and prov["lm_sha256"]
    assert results["test"]["utterances"] == 8 and results["test"]["decoder"] == "greedy"
    with_lm = results["test"]["with_lm"]
    assert with_lm["decoder"] == "beam8+lm" and with_lm["alpha"] in (0.5, 1.0) and with_lm["utterances"] == 8
    assert "WER %" in proc.stdout and "test" in proc.stdout
    # the games' clips are speed-perturbed, the synthetic voices not
    assert re.search(r"training sources per epoch: train 48 utterances x 0\.5 = [0-9.]+ h \([0-9]+%\); people", proc.stderr)
    assert re.search(r"people [0-9]+ utterances x 0\.75 = [0-9.]+ h \([0-9]+%\) at speeds 0\.9, 1, 1\.1", proc.stderr)
    train = [json.loads(x) for x in (tmp_path / "data" / "manifests" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "data" / "manifests" / "test.jsonl").read_text().splitlines()]
    assert len(train) == 48 and not {r["speaker"] for r in train} & {r["speaker"] for r in test}
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    tuned = json.loads((tmp_path / "exp" / "decoding.json").read_text())
    assert len(tuned["grid"]) == 4 and Path(tuned["lm"]) == (tmp_path / "data" / "lm" / "3gram.arpa").resolve()
    lm_words = set((tmp_path / "data" / "lm" / "3gram.unigrams.txt").read_text().split())
    lm_text = set((tmp_path / "data" / "lm_text.txt").read_text().splitlines())
    assert lm_words >= set(english[0].split()) and lm_text >= {r["text"] for r in train}
    assert not (lm_text | set(english)) & {r["text"] for r in test}  # the LM never saw a test sentence
    vocab = json.loads((tmp_path / "data" / "vocab.json").read_text())["labels"]
    assert set("abcdefghijklmnopqrstuvwxyz' ") <= set(vocab)
    by_voice = json.loads((tmp_path / "exp" / "by_voice.json").read_text())
    assert set(by_voice) == {f"{s}_{d}" for s in ["dev", "test", "test_pauses", *real] for d in ("greedy", "lm")}
    if "test_people" in people:
        assert by_voice["test_people_greedy"]["engine"]["people"]["utterances"] == 8
        characters = by_voice["test_people_greedy"]["speaker"]
        assert set(characters) <= {"FAYE", "DEATH", "KLUNK", "NAOMI", "LOU"} and sum(
            c["utterances"] for c in characters.values()) == 8
    if "test_real" in real:
        assert results["test_real"]["utterances"] == 10 and by_voice["test_real_greedy"]["engine"]["human"]["words"] == 92
    assert sum(s["utterances"] for s in by_voice["test_greedy"]["engine"].values()) == 8
    assert set(by_voice["test_greedy"].get("variant", {})) <= {"m3", "f2", "klatt3", "edward"}
    audio = tmp_path / "data" / "manifests" / test[0]["audio_filepath"]
    assert sf.info(str(audio)).samplerate == 16000
    # test_pauses: the same utterances, with quiet before and after the speech
    pauses = [json.loads(x) for x in (tmp_path / "data" / "manifests" / "test_pauses.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"]) for r in pauses] == [(r["id"], r["text"]) for r in test]
    assert sum(p["duration"] - t["duration"] for p, t in zip(pauses, test)) > 8 * 0.5  # 0-1 s either side
    speech, _ = sf.read(str(audio), dtype="float32")
    padded, _ = sf.read(str(tmp_path / "data" / "manifests" / pauses[0]["audio_filepath"]), dtype="float32")
    assert len(padded) >= len(speech) and np.max(np.abs(padded)) == pytest.approx(np.max(np.abs(speech)), abs=0.01)
    assert results["test_pauses"]["utterances"] == 8
    # a second run has nothing to do
    proc = run_cli("recipe", "run", "recipes/synthetic_en", *overrides)
    assert proc.returncode == 0 and proc.stderr.count("up to date") == 9, proc.stderr[-2000:]
    # changing a training key reruns training and what follows, not synthesis: here, people weighted otherwise
    source = (f"data.train_sources=[{{name: people, manifest: {tmp_path / 'data' / 'manifests' / 'people_train.jsonl'},"
              f" weight: 2}}]")
    proc = run_cli("recipe", "run", "recipes/synthetic_en", *overrides, source)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage 1 synthesize: up to date" in proc.stderr and "stage 4 lm: up to date" in proc.stderr
    assert "stage 5 train: running" in proc.stderr and "stage 6 tune: running" in proc.stderr
    assert "training sources per epoch: train 48 utterances x 0.5 = " in proc.stderr  # the default's new half
    assert f"; people {8 if 'test_people' in people else 0} utterances x 2 = " in proc.stderr
    prov = json.loads((tmp_path / "exp" / "results.json").read_text())["provenance"]
    assert "train_people_train" in prov["manifests_sha256"] and "train_sky_train" not in prov["manifests_sha256"]


@pytest.mark.slow
def test_default_recipe_meets_wer_target(tmp_path):
    """The README's main job: default size, trained on synthetic voices and the games' people. At 8b2ade9 the
    held-out characters got 94.0 / 79.1% (test_people) and 96.6 / 85.7% (test_sky) greedy / with the LM,
    synthetic test voices 49.0 / 17.3%, people reading (test_real) 91.3 / 69.6%."""
    proc = run_cli("recipe", "run", "recipes/synthetic_en", f"data_dir={tmp_path / 'data'}", f"exp_dir={tmp_path / 'exp'}",
                   timeout=3600, env={"OMP_NUM_THREADS": str(CORES)})  # every core, as README command 1 has
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert list(results)[1:3] == ["test_people", "test_sky"], results  # the table leads with people
    assert results["test_people"]["utterances"] == 676 and results["test_people"]["with_lm"]["wer"] < 0.85, results
    assert results["test_sky"]["with_lm"]["wer"] < 0.92 and results["test_real"]["with_lm"]["wer"] < 0.8, results
    assert results["test"]["wer"] <= 0.55 and results["test"]["with_lm"]["wer"] <= 0.22, results


def test_evaluate_and_transcribe_with_beam_and_lm(trained, corpus, tmp_path):
    import math

    from conftest import SENTENCES

    words = sorted({w for s in SENTENCES for w in s.split()})
    logp = math.log10(1 / (len(words) + 1))
    arpa = tmp_path / "uni.arpa"
    unigrams = [f"{logp:.4f}\t</s>", "-99\t<s>\t0", f"{logp:.4f}\t<unk>"] + [f"{logp:.4f}\t{w}\t0" for w in words]
    bigrams = [f"{logp:.4f}\t<s> {w}" for w in words]
    arpa.write_text("\\data\\\nngram 1=%d\nngram 2=%d\n\n\\1-grams:\n%s\n\n\\2-grams:\n%s\n\n\\end\\\n" % (
        len(unigrams), len(bigrams), "\n".join(unigrams), "\n".join(bigrams)))
    exp, _, _ = trained
    proc = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(corpus["dev"]), "--beam", "8",
                   "--json", str(tmp_path / "beam.json"), "--out-dir", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "beam.json").read_text())["decoder"] == "beam8"
    proc = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(corpus["dev"]), "--beam", "8",
                   "--lm", str(arpa), "--alpha", "0.8", "--json", str(tmp_path / "lm.json"), "--out-dir", str(tmp_path / "l"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "lm.json").read_text())
    assert result["decoder"] == "beam8+lm" and result["utterances"] == 6
    hyps = [json.loads(x)["hypothesis"] for x in (tmp_path / "l" / "utterances.jsonl").read_text().splitlines()]
    assert all(isinstance(h, str) for h in hyps)
    wav = sorted((corpus["root"] / "audio" / "dev").rglob("*.flac"))[0]
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), str(wav), "--lm", str(arpa), "--beam", "8")
    assert proc.returncode == 0 and proc.stdout.startswith(str(wav) + "\t"), proc.stderr[-2000:]
    (tmp_path / "bad.arpa").write_text("not an lm")
    proc = run_cli("transcribe", "--model", str(exp / "best.pt"), str(wav), "--lm", str(tmp_path / "bad.arpa"))
    assert proc.returncode == 2 and "bad.arpa" in proc.stderr and "Traceback" not in proc.stderr


def test_lm_build_tune_and_pick_up(trained, corpus, tmp_path):
    import shutil

    from conftest import SENTENCES

    exp, _, _ = trained
    model = tmp_path / "model" / "best.pt"
    model.parent.mkdir()
    shutil.copy(exp / "best.pt", model)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    proc = run_cli("lm", "build", "--text", str(text), "--out", str(tmp_path / "lm.arpa"), "--order", "3",
                   "--engine", "builtin")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("lm", "tune", "--model", str(model), "--manifest", str(corpus["dev"]), "--lm",
                   str(tmp_path / "lm.arpa"), "--alphas", "0,0.5,1", "--betas", "0,1", "--beam", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tuned = json.loads((model.parent / "decoding.json").read_text())
    assert len(tuned["grid"]) == 6 and tuned["dev_wer"] == min(g["wer"] for g in tuned["grid"])
    assert tuned["dev_wer"] <= tuned["greedy_dev_wer"] + 0.5 and "best: alpha" in proc.stdout
    assert (model.parent / "logprobs_dev.pt").exists()  # the cache a second tuning run reuses
    from asr.lm_tune import tune  # the CLI forked workers over the grid; one process gives the same grid

    serial = tune(model, corpus["dev"], tmp_path / "lm.arpa", [0, 0.5, 1], [0, 1], beam=8, device="cpu", processes=1,
                  write=False)
    assert [(g["alpha"], g["beta"], g["wer"]) for g in serial["grid"]] == \
        [(g["alpha"], g["beta"], g["wer"]) for g in tuned["grid"]]
    # evaluate with no decoder options uses the tuned LM decoding; --greedy opts out
    proc = run_cli("evaluate", "--model", str(model), "--manifest", str(corpus["dev"]), "--json", str(tmp_path / "e.json"),
                   "--out-dir", str(tmp_path / "e"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["decoder"] == f"beam{tuned['beam']}+lm" and result["alpha"] == tuned["alpha"]
    assert result["wer"] == pytest.approx(tuned["dev_wer"])  # same decoding, same number
    proc = run_cli("evaluate", "--model", str(model), "--manifest", str(corpus["dev"]), "--greedy",
                   "--json", str(tmp_path / "g.json"), "--out-dir", str(tmp_path / "g"))
    assert json.loads((tmp_path / "g.json").read_text())["decoder"] == "greedy"


def test_bf16_autocast_training_on_cpu_with_noise_and_speed_augmentation(corpus, tmp_path):
    import numpy as np

    (tmp_path / "noise").mkdir()
    sf.write(str(tmp_path / "noise" / "n.flac"), np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.05,
             16000)
    exp = tmp_path / "exp"
    proc = run_cli("train", str(ROOT / "conf/ds2_tiny.yaml"), f"exp_dir={exp}", f"data.train_manifest={corpus['train']}",
                   f"data.dev_manifest={corpus['dev']}", "train.epochs=2",
                   f"data.noise_dir={tmp_path / 'noise'}", "data.speed_perturb=[0.9,1.0,1.1]", *TINY, "train.amp=bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "; bfloat16 autocast; conv stack contiguous" in proc.stderr  # the log names the compute path
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 2 and all(math.isfinite(x) for x in losses) and losses[1] < losses[0]
    assert float(rows[-1]["skipped_batches"]) == 0
    from asr.training import cpu_has_bf16_kernels

    warned = "oneDNN has no bf16 kernels for this CPU" in proc.stderr
    assert warned != cpu_has_bf16_kernels()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or platform.machine() != "x86_64",
                    reason="reads x86 CPU flags from /proc/cpuinfo")
def test_bf16_kernel_check_matches_cpu_flags():
    """train.amp=bf16 warns on CPUs without AVX-512 (oneDNN's bf16 kernels need avx512bw/vl/dq at least)."""
    from asr.training import cpu_has_bf16_kernels

    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
    if not {"avx512bw", "avx512vl", "avx512dq"} <= flags:
        assert not cpu_has_bf16_kernels()
    if {"avx512_bf16", "avx512bw", "avx512vl", "avx512dq"} <= flags or "amx_bf16" in flags:
        assert cpu_has_bf16_kernels()


def test_amp_auto_takes_bf16_on_a_cpu_only_given_bf16_kernels():
    import torch

    from asr.training import TrainingError, autocast_dtype, cpu_has_bf16_kernels

    cpu = torch.device("cpu")
    expected = (torch.bfloat16, True) if cpu_has_bf16_kernels() else (torch.float32, False)
    assert autocast_dtype("auto", cpu) == expected
    assert autocast_dtype("bf16", cpu) == (torch.bfloat16, True) and autocast_dtype("off", cpu) == (torch.float32, False)
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
