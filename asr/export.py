"""Shipping a model: averaging checkpoints, and exporting for Python-free inference.

TorchScript: a padded batch of waveforms and their lengths -> log-probs and output lengths
(features included), labels inside as `labels.json`. ONNX (opset 17, for onnxruntime and
friends): one waveform (1, samples) -> log-probs (1, frames, outputs); the STFT is written as a
convolution with DFT kernels and the recurrent layers run unpacked (one utterance has no padding);
labels and sample rate are in the model's metadata. Either needs only a CTC decoder beside it.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import atomic_write
from .checkpoint import (CheckpointError, inference_view, load_checkpoint, load_model, model_from_checkpoint,
                         save_checkpoint)
from .features import _EPS


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
    result = inference_view(first)
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
    with atomic_write(out, "wb") as f:
        torch.jit.save(traced, f, _extra_files=extra)
    return {"output": str(out), "format": "torchscript", "sample_rate": rate, "outputs": len(vocab)}


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, list[str], dict]:
    """(module, labels, config) of an exported model."""
    extra = {"labels.json": "", "config.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["labels.json"]), json.loads(extra["config.json"])


class _OneUtterance(torch.nn.Module):
    """The model for a single unpadded waveform, in operators ONNX has (no complex STFT, no packing)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        fe = model.frontend
        n = fe.n_fft
        bins = n // 2 + 1 if fe.cfg.kind == "logmel" else fe.num_features  # linear features stop at f_max
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * torch.arange(n, dtype=torch.float64)[None, :] / n
        window = fe.window.double()[None, :]
        self.register_buffer("dft_cos", (torch.cos(angle) * window).float()[:, None, :])
        self.register_buffer("dft_sin", (-torch.sin(angle) * window).float()[:, None, :])

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        m, fe = self.model, self.model.frontend
        x = F.pad(waveform[:, None, :], (fe.n_fft // 2, fe.n_fft // 2))  # torch.stft(center=True, constant pad)
        re = F.conv1d(x, self.dft_cos, stride=fe.hop_length)
        im = F.conv1d(x, self.dft_sin, stride=fe.hop_length)
        power = re * re + im * im
        feats = torch.log(torch.matmul(fe.mel_fb, power) + _EPS) if fe.cfg.kind == "logmel" else torch.log1p(power.sqrt())
        if fe.cfg.normalize == "utterance":
            mean = feats.mean(-1, keepdim=True)
            feats = (feats - mean) / ((feats - mean).pow(2).mean(-1, keepdim=True).sqrt() + 1e-5)
        elif fe.cfg.normalize == "global":
            feats = (feats - fe.global_mean[:, None]) / fe.global_std[:, None]
        y = feats.unsqueeze(1)
        for layer in m.conv.layers:
            y = layer(y)
        n, c, f, t = y.shape
        y = y.reshape(n, c * f, t).permute(2, 0, 1)  # (T, 1, H)
        for rnn in m.rnns:
            if rnn.norm is not None:
                y = rnn.norm(y.reshape(t * n, -1)).reshape(t, n, -1)
            y, _ = rnn.rnn(y)
            if rnn.bidirectional:
                y = y[:, :, : rnn.hidden] + y[:, :, rnn.hidden:]
        if m.lookahead is not None:
            y = m.lookahead(y)
        y = y.permute(1, 0, 2).reshape(n * t, -1)
        return F.log_softmax(m.head(y).reshape(n, t, -1), dim=-1)


def export_onnx(checkpoint: str | Path, out: str | Path) -> dict:
    """Export one-utterance inference (waveform -> log-probs) to ONNX with labels in its metadata."""
    try:
        import onnx
    except ImportError:
        raise CheckpointError("ONNX export needs the onnx package: pip install 'asr[export]'") from None
    model, vocab, cfg = load_model(checkpoint, "cpu")
    if cfg.features.kind == "image":
        raise CheckpointError(f"{checkpoint}: a text-line (features.kind=image) model has no ONNX export: its "
                              "front end is not a spectrogram")
    module = _OneUtterance(model).eval()
    example = torch.randn(1, int(2 * cfg.features.sample_rate)) * 0.1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), input_names=["waveform"], output_names=["log_probs"],
                          dynamic_axes={"waveform": {1: "samples"}, "log_probs": {1: "frames"}}, opset_version=17,
                          dynamo=False)
    proto = onnx.load(str(tmp))
    for key, value in (("labels", json.dumps(vocab.labels)), ("sample_rate", str(cfg.features.sample_rate)),
                       ("blank", str(vocab.blank))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return {"output": str(out), "format": "onnx", "sample_rate": cfg.features.sample_rate, "outputs": len(vocab)}
