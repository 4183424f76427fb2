"""CUDA paths: the model, features, our CTC loss and streaming against the CPU; training through the real CLI
with autocast (fp16 with its grad scaler, bf16), torch.compile, decoding on the GPU. Skipped without a GPU.

    python -m pytest tests/test_cuda.py                          # on a machine with CUDA (scripts/gpu_check.sh)
    ASR_TEST_DEVICE=cpu python -m pytest tests/test_cuda.py      # the same checks on the CPU (fp16 left out)
"""
import copy
import csv
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from asr.checkpoint import load_checkpoint
from asr.config import load_config
from asr.ctc import ctc_loss
from asr.model import DeepSpeech2
from conftest import ROOT, TINY, run_cli

DEVICE = os.environ.get("ASR_TEST_DEVICE", "cuda")
# scripts/gpu_check.sh sets ASR_REQUIRE_CUDA=1: there a missing GPU fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available()
                                and not os.environ.get("ASR_REQUIRE_CUDA"), reason="no CUDA device")


@pytest.fixture
def exact_float32():
    """TF32 off in cuDNN convolutions and matmuls, so the GPU computes what the CPU does to float32 rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_model_features_and_ctc_loss_on_device_match_cpu(exact_float32):
    cfg = load_config(ROOT / "conf" / "ds2_tiny.yaml", [*TINY, "exp_dir=x", "data.train_manifest=x", "data.dev_manifest=x"])
    torch.manual_seed(0)
    cpu = DeepSpeech2(cfg.model, cfg.features, 29).train()
    dev = copy.deepcopy(cpu).to(DEVICE)
    lengths = torch.tensor([32000, 27000, 16000, 9000])
    waves = torch.randn(4, 32000) * 0.1
    target_lengths = torch.tensor([30, 22, 12, 5])
    targets = torch.randint(1, 29, (int(target_lengths.sum()),))
    results = {}
    for name, model, device in (("cpu", cpu, "cpu"), ("dev", dev, DEVICE)):
        lp, out_lengths = model(waves.to(device), lengths.to(device))
        loss = ctc_loss(lp.transpose(0, 1), targets.to(device), out_lengths, target_lengths.to(device))
        loss.backward()
        grads = [p.grad.detach().cpu() for p in model.parameters()]
        results[name] = lp.detach().cpu(), out_lengths.cpu(), loss.item(), grads
        if name == "dev":  # our loss against torch's own on the device, gradient (through log_softmax) included
            x = lp.detach().transpose(0, 1).requires_grad_()
            ours = ctc_loss(x.log_softmax(-1), targets.to(device), out_lengths, target_lengths.to(device))
            (g_ours,) = torch.autograd.grad(ours, x)
            theirs = F.ctc_loss(x.log_softmax(-1), targets.to(device), out_lengths, target_lengths.to(device))
            (g_theirs,) = torch.autograd.grad(theirs, x)
            assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)
    (lp_c, len_c, loss_c, grads_c), (lp_d, len_d, loss_d, grads_d) = results["cpu"], results["dev"]
    assert torch.equal(len_c, len_d)
    torch.testing.assert_close(lp_d, lp_c, rtol=1e-3, atol=1e-3)
    assert loss_d == pytest.approx(loss_c, rel=1e-4)
    for g_d, g_c in zip(grads_d, grads_c):
        torch.testing.assert_close(g_d, g_c, rtol=1e-2, atol=1e-4)


AMPS = ["off", "bf16"] + (["fp16"] if DEVICE == "cuda" else [])


@pytest.mark.parametrize("amp", AMPS)
def test_cli_trains_and_decodes_on_device(corpus, tmp_path, amp):
    exp = tmp_path / "exp"
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={exp}",
                   f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", "train.epochs=2",
                   *TINY, f"train.device={DEVICE}", f"train.amp={amp}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"device {DEVICE}" in proc.stderr
    if amp != "off":
        dtype = {"bf16": "bfloat16", "fp16": "float16"}[amp]
        assert f"compute: {torch.device(DEVICE).type}" in proc.stderr and f"{dtype} autocast" in proc.stderr
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(x) for x in losses) and losses[1] < losses[0]
    assert float(rows[-1]["skipped_batches"]) == 0
    scaler = load_checkpoint(exp / "last.pt")["scaler"]
    assert bool(scaler) == (amp == "fp16")  # a grad scaler (its scale, growth tracker) only for fp16
    if amp == "fp16":
        assert math.isfinite(scaler["scale"]) and scaler["scale"] > 0
    wers = {}
    for device in (DEVICE, "cpu"):
        out = tmp_path / f"{device}.json"
        p = run_cli("evaluate", "--model", str(exp / "best.pt"), "--manifest", str(corpus["dev"]),
                    "--device", device, "--json", str(out))
        assert p.returncode == 0, p.stderr[-3000:]
        wers[device] = json.loads(out.read_text())["wer"]
    assert wers[DEVICE] == pytest.approx(wers["cpu"], abs=0.05)


def test_cli_trains_with_torch_compile_on_device(corpus, tmp_path):
    exp = tmp_path / "exp"
    proc = run_cli("train", str(ROOT / "conf" / "ds2_tiny.yaml"), f"exp_dir={exp}",
                   f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", "train.epochs=1",
                   *TINY, f"train.device={DEVICE}", "train.compile=true", "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile" in proc.stderr
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    assert int(rows[-1]["step"]) == 4 and math.isfinite(float(rows[-1]["train_loss"]))


def test_stream_on_device_matches_the_whole_utterance_on_the_cpu(exact_float32):
    from asr.streaming import Stream
    from asr.text import CharVocabulary

    cfg = load_config(ROOT / "conf" / "ds2_streaming.yaml", ["exp_dir=x", "data.train_manifest=x", "data.dev_manifest=x"])
    vocab = CharVocabulary(list(" abcdefghijklmnopqrstuvwxyz'"))
    torch.manual_seed(0)
    cpu = DeepSpeech2(cfg.model, cfg.features, len(vocab)).eval()
    wave = torch.randn(40_000) * 0.1
    with torch.no_grad():
        ref, lens = cpu(wave[None], torch.tensor([len(wave)]))
    stream = Stream(copy.deepcopy(cpu).to(DEVICE), vocab)
    pieces = [stream.accept(wave[i: i + 1600].numpy()) for i in range(0, len(wave), 1600)] + [stream.finish()]
    torch.testing.assert_close(torch.cat(pieces), ref[0, : lens[0]], rtol=1e-3, atol=1e-3)
