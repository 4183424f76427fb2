"""Shipping a model: averaging checkpoints, and exporting to TorchScript for Python-free inference.

The TorchScript module maps a padded batch of 16 kHz waveforms and their lengths to log-probs
and output lengths (features included), and carries its labels as `labels.json`, so a C++ or
mobile runtime needs nothing else but a CTC decoder.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint


def average_checkpoints(paths: list[str | Path], out: str | Path) -> dict:
    """Average the model weights of `paths` (same model and vocabulary) into a new checkpoint."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:], strict=True):
        if c["labels"] != first["labels"] or c["model"].keys() != first["model"].keys() or any(
                c["model"][k].shape != v.shape for k, v in first["model"].items()):
            raise CheckpointError(f"{p} holds another model or vocabulary than {paths[0]}; cannot average")
    averaged = {}
    for k, v in first["model"].items():
        if v.is_floating_point():
            averaged[k] = sum(c["model"][k].double() for c in ckpts).div(len(ckpts)).to(v.dtype)
        else:  # counters such as BatchNorm's num_batches_tracked
            averaged[k] = ckpts[-1]["model"][k]
    result = {k: v for k, v in first.items() if k not in ("optimizer", "scheduler", "scaler", "rng", "position")}
    result.update(model=averaged, averaged_from=[str(p) for p in paths])
    model_from_checkpoint(result)  # the averaged weights still build the model
    save_checkpoint(result, out)
    return {"output": str(out), "averaged": len(paths)}


class _Exported(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(waves, lengths)


def export_torchscript(checkpoint: str | Path, out: str | Path, example_seconds: float = 2.0) -> dict:
    """Trace the model (waveforms -> log-probs) to TorchScript; returns what was written."""
    model, vocab, cfg = load_model(checkpoint, "cpu")
    rate = cfg.features.sample_rate
    n = int(example_seconds * rate)
    waves = torch.randn(2, n) * 0.1
    lengths = torch.tensor([n, n * 3 // 4])
    module = _Exported(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes: lengths stay dynamic
        traced = torch.jit.trace(module, (waves, lengths), check_trace=False)
    extra = {"labels.json": json.dumps(vocab.labels), "config.json": json.dumps({"sample_rate": rate,
                                                                                 "blank": vocab.blank})}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.jit.save(traced, str(tmp), _extra_files=extra)
    tmp.replace(out)
    return {"output": str(out), "format": "torchscript", "sample_rate": rate, "outputs": len(vocab)}


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, list[str], dict]:
    """(module, labels, config) of an exported model."""
    extra = {"labels.json": "", "config.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["labels.json"]), json.loads(extra["config.json"])
