"""Running a trained model over audio: checkpoint in, log-probabilities and greedy text out."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .decoding import CTCBeamDecoder, greedy_decode


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


class Recognizer:
    """A checkpoint loaded for inference, batching waveforms by length."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", batch_size: int = 16, beam: int = 0,
                 lm: str | Path | None = None, alpha: float = 0.5, beta: float = 1.0):
        self.device = resolve_device(device)
        self.model, self.vocab, self.config = load_model(checkpoint, self.device)
        self.sample_rate = self.config.features.sample_rate
        self.batch_size = batch_size
        self.beam_decoder = None
        if beam or lm:
            self.beam_decoder = CTCBeamDecoder(self.vocab.labels, self.vocab.blank, str(lm) if lm else None, alpha,
                                               beta, beam_width=beam or 100, frame_seconds=self.frame_seconds)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame (feature hop times the conv time strides)."""
        stride = 1
        for layer in self.model.conv.layers:
            if isinstance(layer, torch.nn.Conv2d):
                stride *= layer.stride[1]
        return self.model.frontend.hop_length * stride / self.sample_rate

    @property
    def decoder_name(self) -> str:
        if self.beam_decoder is None:
            return "greedy"
        name = f"beam{self.beam_decoder.beam_width}"
        return name + "+lm" if self.beam_decoder.lm is not None else name

    @torch.no_grad()
    def log_probs(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per-utterance log-probabilities (T_i, C) on the CPU, in input order."""
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        out: list[torch.Tensor | None] = [None] * len(waves)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            lengths = torch.tensor([len(waves[i]) for i in idx])
            batch = torch.zeros(len(idx), int(lengths.max()))
            for j, i in enumerate(idx):
                batch[j, : len(waves[i])] = torch.from_numpy(np.asarray(waves[i], dtype=np.float32))
            lp, lens = self.model(batch.to(self.device), lengths.to(self.device))
            lp, lens = lp.float().cpu(), lens.cpu()
            for j, i in enumerate(idx):
                out[i] = lp[j, : lens[j]]
        return out  # type: ignore[return-value]

    def greedy(self, log_probs: Sequence[torch.Tensor]) -> list[str]:
        """Greedy transcripts of per-utterance log-probs."""
        if not log_probs:
            return []
        lengths = torch.tensor([lp.shape[0] for lp in log_probs])
        padded = torch.nn.utils.rnn.pad_sequence(list(log_probs), batch_first=True)
        return greedy_decode(padded, lengths, self.vocab)

    def decode(self, log_probs: Sequence[torch.Tensor]) -> list[str]:
        """Transcripts of per-utterance log-probs with this recognizer's decoder."""
        if self.beam_decoder is None:
            return self.greedy(log_probs)
        return [self.beam_decoder.decode(lp) for lp in log_probs]

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        return self.decode(self.log_probs(waves))
