"""Training that survives faults: kill -9 mid-epoch then --resume gives the uninterrupted weights;
a kill during a checkpoint write never leaves a corrupt checkpoint."""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT, TINY, run_cli


def _train_args(corpus, exp):
    return ["train", str(ROOT / "conf/ds2_tiny.yaml"), f"exp_dir={exp}", f"data.train_manifest={corpus['train']}",
            f"data.dev_manifest={corpus['dev']}", "train.epochs=3", "train.save_every_steps=2", "train.keep_last=2",
            "train.keep_best=2", "data.reverb_prob=0.5", *TINY,  # augmentation must resume exactly too,
            "model.inter_ctc_layer=1"]  # and the intermediate CTC head


def test_kill_mid_epoch_then_resume_equals_uninterrupted(corpus, tmp_path):
    proc = run_cli(*_train_args(corpus, tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = torch.load(tmp_path / "a" / "last.pt", weights_only=True)

    exp = tmp_path / "b"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "asr", *_train_args(corpus, exp)], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = exp / "checkpoints" / "step-00000008.pt"  # inside the second epoch (5 batches per epoch)
    deadline = time.time() + 300
    while not target.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = torch.load(exp / "last.pt", weights_only=True)
    assert killed_at["position"] is not None and killed_at["step"] < reference["step"]

    proc = run_cli(*_train_args(corpus, exp), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"batch {killed_at['position']['batch']}" in proc.stderr
    resumed = torch.load(exp / "last.pt", weights_only=True)
    assert resumed["step"] == reference["step"]
    for name, value in reference["model"].items():
        assert torch.allclose(resumed["model"][name].float(), value.float(), atol=1e-6, rtol=0), name
    assert len(list((exp / "checkpoints").glob("step-*.pt"))) == 2  # keep_last
    proc = run_cli("average", "--exp", str(exp), "--last", "2", "--out", str(tmp_path / "avg.pt"))
    assert proc.returncode == 0 and '"averaged": 2' in proc.stdout, proc.stderr[-2000:]
    assert torch.load(tmp_path / "avg.pt", weights_only=True)["averaged_from"][-1].endswith("step-00000015.pt")

    # the two best epochs by dev WER are kept (across the kill and the resume) and can be averaged
    rows = list(csv.DictReader((exp / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    ranked = sorted((float(r["dev_wer"]), f"epoch-{int(r['epoch']):04d}.pt") for r in rows)
    kept = json.loads((exp / "checkpoints" / "best.json").read_text())
    assert sorted(kept) == sorted(name for _, name in ranked[:2])
    assert sorted(p.name for p in (exp / "checkpoints").glob("epoch-*.pt")) == sorted(kept)
    for name in kept:
        assert torch.load(exp / "checkpoints" / name, weights_only=True)["epoch"] == int(name[6:10]) - 1
    proc = run_cli("average", "--exp", str(exp), "--best", "2", "--out", str(tmp_path / "best2.pt"))
    assert proc.returncode == 0 and '"averaged": 2' in proc.stdout, proc.stderr[-2000:]
    sources = torch.load(tmp_path / "best2.pt", weights_only=True)["averaged_from"]
    assert sorted(os.path.basename(p) for p in sources) == sorted(kept)


WRITER = """
import sys, torch
from asr.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({"i": i, "w": torch.full((3_000_000,), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_kill_during_checkpoint_write_never_corrupts(tmp_path):
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(0)
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # at least one complete checkpoint
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        ckpt = torch.load(path, weights_only=True)
        assert bool((ckpt["w"] == float(ckpt["i"])).all()) and ckpt["w"].numel() == 3_000_000


def test_ddp_two_processes_equal_single_process_with_the_same_global_batch(corpus, tmp_path):
    """2 gloo ranks x batch 4 == 1 process accumulating 2 micro-batches of 4 (same data, same order),
    launched on one node and as two nodes through torchrun's c10d rendezvous."""
    common = [str(ROOT / "conf/ds2_tiny.yaml"), f"data.train_manifest={corpus['train']}",
              f"data.dev_manifest={corpus['dev']}", "train.epochs=1", "train.max_steps=3", "specaugment.enabled=false",
              *TINY, "train.batch_size=4"]
    # one thread in every process, the reference too: a different thread count sums in another order, and
    # AdamW's first steps (update ~ lr * sign of the gradient) magnify that rounding to ~2e-5 in a few weights
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "asr", "train", *common, f"exp_dir={tmp_path / 'single'}",
                           "train.accum_steps=2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    port = str(29500 + random.Random().randint(0, 500))
    run = [sys.executable, "-m", "torch.distributed.run"]
    launches = {  # one machine with 2 processes; two "machines" (launchers) meeting through a c10d rendezvous
        "ddp": [run + ["--nproc_per_node", "2", "--master_port", port]],
        "nodes": [run + ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                         "--rdzv-endpoint", f"127.0.0.1:{int(port) + 600}", "--rdzv-id", "asr-test"]] * 2,
    }
    for name, launchers in launches.items():
        logs = [tmp_path / f"{name}-{i}.log" for i in range(len(launchers))]
        procs = [subprocess.Popen(cmd + ["-m", "asr", "train", *common, f"exp_dir={tmp_path / name}"], env=env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
                 for cmd, log in zip(launchers, logs)]
        for p in procs:
            p.wait(timeout=600)
        errors = [log.read_text() for log in logs]
        assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errors)
        assert any("data parallel over 2 processes" in e for e in errors), name
        b = torch.load(tmp_path / name / "last.pt", weights_only=True)
        assert a["step"] == b["step"] == 3
        # All-reduce sums the ranks' gradients in another order than accumulation does, and AdamW turns a rounding
        # difference in a near-zero gradient into a step of up to lr either way (its update is ~ lr * sign(g) at
        # first). So a handful of weights may differ by up to 2 x the summed learning rate (2e-3 x (1+2+3)/5 over
        # the three warm-up steps); a real difference (data, order, averaging) moves most of them. How many move
        # differs between runs of the test suite, for a reason not found: 1 of 142,200 beyond 2e-5 in one (three DDP runs
        # bit-identical), 149 in a fresh-clone CI run; so at most 1 in 200.
        lr_sum = 2e-3 * (1 + 2 + 3) / 5
        total = outliers = 0
        for key, value in a["model"].items():
            if "running" in key or "num_batches" in key:
                continue  # BatchNorm statistics: DDP keeps rank 0's, accumulation sees both micro-batches
            diff = (b["model"][key] - value).abs()
            assert diff.max() <= 2 * lr_sum + 1e-5, (name, key, float(diff.max()))
            outliers += int((diff > 2e-5 + 1e-4 * value.abs()).sum())
            total += value.numel()
        assert outliers <= total // 200, (name, outliers, total)
