"""Checkpoints: the schema, written atomically, read with `weights_only=True`, and which of an experiment's to use.

A checkpoint is a dict: `format` (FORMAT_VERSION), `model` (state dict), `config`, `labels` and `vocabulary`, the
end-of-epoch `dev_wer`, and, for resuming, TRAINING_KEYS plus `epoch`, `step` and `best_wer`. The inference view
(best.pt, averaged checkpoints) leaves TRAINING_KEYS out. An experiment folder holds last.pt (the latest),
best.pt (lowest dev WER), checkpoints/step-*.pt (the last `train.keep_last`) and checkpoints/epoch-*.pt (the
`train.keep_best` best epochs, indexed by dev WER in checkpoints/best.json).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write, write_text_atomic
from .config import Config, from_dict
from .model import DeepSpeech2
from .text import Vocabulary, vocabulary_from_dict

FORMAT_VERSION = 1
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "rng", "position", "spent")  # what only a resumed run needs


class CheckpointError(ValueError):
    pass


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt or "labels" not in ckpt:
        raise CheckpointError(f"{path}: not an asr checkpoint (missing model, config or labels)")
    if ckpt.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']!r}; this asr reads format {FORMAT_VERSION}")
    return ckpt


def inference_view(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint less what only resuming needs: what best.pt and averaged checkpoints hold."""
    return {k: v for k, v in ckpt.items() if k not in TRAINING_KEYS}


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[DeepSpeech2, Vocabulary, Config]:
    """Rebuild the model, vocabulary and config stored in `ckpt`."""
    cfg = from_dict(ckpt["config"])
    try:
        vocab = vocabulary_from_dict(ckpt.get("vocabulary") or {"type": "char", "labels": ckpt["labels"]})
    except ValueError as e:
        raise CheckpointError(f"checkpoint vocabulary is unusable: {e}") from None
    model = DeepSpeech2(cfg.model, cfg.features, len(vocab))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit its model config: {str(e)[:300]}") from None
    return model, vocab, cfg


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DeepSpeech2, Vocabulary, Config]:
    """Model in eval mode on `device`, with its vocabulary and training config."""
    model, vocab, cfg = model_from_checkpoint(load_checkpoint(path))
    return model.to(device).eval(), vocab, cfg


# ---------------------------------------------------------------- an experiment's checkpoints
def save_last(exp: Path, keep: int, ckpt: dict) -> None:
    """Write last.pt atomically; keep hard links to the last `keep` of them in checkpoints/."""
    save_checkpoint(ckpt, exp / "last.pt")
    if keep <= 0:
        return
    folder = exp / "checkpoints"
    folder.mkdir(exist_ok=True)
    kept = folder / f"step-{ckpt['step']:08d}.pt"
    kept.unlink(missing_ok=True)
    try:
        kept.hardlink_to(exp / "last.pt")
    except OSError:  # no hard links on this filesystem
        save_checkpoint(ckpt, kept)
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def keep_best(exp: Path, keep: int, epoch: int, dev_wer: float) -> None:
    """Keep a hard link to last.pt (an end-of-epoch checkpoint) among the `keep` best by dev WER, indexed in
    checkpoints/best.json so that choosing them opens none."""
    if keep <= 0:
        return
    folder = exp / "checkpoints"
    folder.mkdir(exist_ok=True)
    index_path = folder / "best.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index = {name: wer for name, wer in index.items() if (folder / name).exists()}
    name = f"epoch-{epoch + 1:04d}.pt"
    index[name] = dev_wer
    ranked = sorted(index, key=lambda n: (index[n], n))
    if name in ranked[:keep]:
        (folder / name).unlink(missing_ok=True)
        try:
            (folder / name).hardlink_to(exp / "last.pt")
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(exp / "last.pt", folder / (name + ".tmp"))
            (folder / (name + ".tmp")).replace(folder / name)
    for old in ranked[keep:]:
        (folder / old).unlink(missing_ok=True)
        index.pop(old)
    write_text_atomic(index_path, json.dumps(index, indent=1, sort_keys=True))


def best_epochs(exp: str | Path, n: int) -> list[Path]:
    """The `n` kept end-of-epoch checkpoints with the lowest dev WER (fewer, with a warning, if fewer are kept)."""
    folder = Path(exp) / "checkpoints"
    index = folder / "best.json"
    if not index.exists():
        raise CheckpointError(f"{index} is missing: no end-of-epoch checkpoints were kept (train.keep_best)")
    wers = json.loads(index.read_text())
    if len(wers) < n:
        print(f"warning: {folder} keeps {len(wers)} best-epoch checkpoints, fewer than {n}", file=sys.stderr)
    return [folder / name for name in sorted(wers, key=lambda name: (wers[name], name))[:n]]


def last_steps(exp: str | Path, n: int) -> list[Path]:
    """The last `n` kept step checkpoints, oldest first."""
    folder = Path(exp) / "checkpoints"
    found = sorted(folder.glob("step-*.pt"))
    if not found:
        raise CheckpointError(f"{folder} holds no step-*.pt checkpoints (train.keep_last)")
    return found[-n:]
