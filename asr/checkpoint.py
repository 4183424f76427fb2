"""Checkpoints: written atomically, read with `weights_only=True`, carrying config and vocabulary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .config import Config, from_dict
from .model import DeepSpeech2
from .text import Vocabulary, vocabulary_from_dict

FORMAT_VERSION = 1


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
    return ckpt


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
