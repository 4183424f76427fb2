"""Training curves as a PNG: train/dev loss and dev WER per epoch, from metrics.csv."""
from __future__ import annotations

import csv
from pathlib import Path

from .atomic import atomic_write


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epoch = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epoch, [float(r["train_loss"]) for r in rows], "o-", label="train")
    ax1.plot(epoch, [float(r["dev_loss"]) for r in rows], "s-", label="dev")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("CTC loss (per target token)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(epoch, [100 * float(r["dev_wer"]) for r in rows], "o-", label="WER")
    ax2.plot(epoch, [100 * float(r["dev_cer"]) for r in rows], "s-", label="CER")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("dev error rate (%), greedy")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_write(out_png, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
