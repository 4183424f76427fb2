"""Shared fixtures: a tiny real corpus spoken by espeak-ng, written as FLAC with manifests."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from asr.manifest import Utterance, write_manifest
from asr.synthesis import Voice, synthesize_corpus
from asr.text import normalize_text

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0))
# the cores shared among pytest-xdist's workers: each worker and the processes it starts take their share
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = os.environ.get("OMP_NUM_THREADS") or str(max(1, CORES // WORKERS))
os.environ["OMP_NUM_THREADS"] = THREADS


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core this process may run on (xdist counts physical cores where psutil is
    installed, and a 2-vCPU machine may have one)."""
    return CORES


SENTENCES = [
    "the cat sat on the mat", "she sells sea shells", "a bird in the hand", "the sun is bright today",
    "we went to the market", "he reads a book at night", "the dog ran after the ball", "open the door please",
    "my friend lives in the city", "it is raining again", "they played music all day", "the water is cold",
]
TRAIN_VOICES = [Voice("espeak", "en-us+m1", 170, 40), Voice("espeak", "en+f3", 180, 60), Voice("espeak", "en-us+m4", 160, 50)]
TEST_VOICE = Voice("espeak", "en-us+m3", 175, 50)


def make_corpus(root: Path, voices: list[Voice], sentences: list[str], split: str) -> Path:
    jobs = [{"id": f"{split}-{i:03d}-{v.id}", "text": s, "voice": asdict(v)}
            for i, (v, s) in enumerate((v, s) for v in voices for s in sentences)]
    rows = synthesize_corpus(jobs, root / "audio" / split, 16000, workers=1)
    utts = [Utterance(r["path"], round(r["duration"], 3), normalize_text(r["text"]), speaker=r["voice"]["name"], id=r["id"])
            for r in rows]
    path = root / f"{split}.jsonl"
    write_manifest(path, utts, relative_to_manifest=True)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """train (3 voices x 12 sentences) and dev (1 unseen voice) manifests of real synthesized speech."""
    root = tmp_path_factory.mktemp("corpus")
    return {"root": root, "train": make_corpus(root, TRAIN_VOICES, SENTENCES, "train"),
            "dev": make_corpus(root, [TEST_VOICE], SENTENCES[:6], "dev")}


def training_pass(model, waves, lengths, loss) -> tuple:
    """A model's log-probs and parameter gradients from one training pass of `loss(log_probs)`, seeded alike
    (dropout), for tests that train one model two ways."""
    import torch

    model.zero_grad()
    torch.manual_seed(1)
    log_probs, _ = model(waves, lengths)
    loss(log_probs).backward()
    return log_probs, [p.grad.clone() for p in model.parameters()]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real `asr` command line in a subprocess (with `env` added to the environment)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "asr", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=timeout)


TINY = ["features.kind=logmel", "features.n_mels=40", "features.window_ms=25", "model.conv_layers=1",
        "model.conv_channels=8", "model.conv_time_stride=2", "model.rnn_layers=2", "model.rnn_hidden=64",
        "train.batch_size=8", "train.warmup_steps=5", "train.log_every=2",
        "train.amp=off"]  # float32 on every CPU: amp=auto takes bf16 where oneDNN has bf16 kernels


@pytest.fixture(scope="session")
def trained(corpus, tmp_path_factory):
    """A tiny model trained 2 epochs through the CLI: (exp dir, the train arguments, the finished process).
    Shared by the modules that only read it; a test that changes the folder copies it first."""
    exp = tmp_path_factory.mktemp("exp")
    args = ["train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={exp}", f"data.train_manifest={corpus['train']}",
            f"data.dev_manifest={corpus['dev']}", "train.epochs=2", *TINY]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exp, args, proc


@pytest.fixture(scope="session")
def streaming_model(corpus, tmp_path_factory):
    """conf/ds2_streaming.yaml trained briefly (1 epoch, lookahead 2): its exp dir."""
    exp = tmp_path_factory.mktemp("stream_exp")
    proc = run_cli("train", str(ROOT / "conf" / "ds2_streaming.yaml"), f"exp_dir={exp}",
                   f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", "train.epochs=1",
                   *TINY, "model.lookahead=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exp
