"""One training step of a config's model, timed on random data: what the benchmarks compare and what a recipe measures
to choose a size this host trains within its time (asr.recipe.default_size)."""
from __future__ import annotations

import statistics
import time

import torch

from .losses import get_ctc_loss
from .model import DeepSpeech2
from .training import ctc_objective

NUM_CLASSES = 29


class Stepper:
    """One full training step (features, forward, CTC loss, backward, AdamW) of the recipe's model."""

    def __init__(self, cfg, device: torch.device, dtype: torch.dtype | None, own_gru: bool):
        torch.manual_seed(0)
        self.model = DeepSpeech2(cfg.model, cfg.features, NUM_CLASSES).to(device).train()
        self.model.use_own_cpu_gru(own_gru)
        self.model.use_channels_last(device.type == "cpu" and dtype is None)  # as training chooses
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)  # as training chooses
        self.loss_fn = get_ctc_loss(cfg.train.loss)
        self.sr, self.device, self.dtype = cfg.features.sample_rate, device, dtype
        self.inter_weight = cfg.model.inter_ctc_weight

    def batch(self, lengths: torch.Tensor) -> tuple:
        """Random waveforms of `lengths` samples, with ~12 random characters per second of speech."""
        waves = torch.randn(len(lengths), int(lengths.max()), device=self.device) * 0.1
        label_len = (lengths.float() / self.sr * 12).long()
        targets = torch.randint(1, NUM_CLASSES, (int(label_len.sum()),))
        return waves, lengths.to(self.device), targets.to(self.device), label_len.to(self.device)

    def spread(self, batch: int, seconds: float) -> tuple:
        """The benchmark's batch: `batch` waveforms whose lengths span 60-100% of `seconds`."""
        return self.batch(torch.linspace(0.6 * seconds * self.sr, seconds * self.sr, batch).long())

    def __call__(self, waves, lengths, targets, label_len) -> float:
        """Seconds the step took."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            outputs = self.model.forward_features(*self.model.frontend(waves, lengths),
                                                  intermediate=self.model.inter_head is not None)
            loss = ctc_objective(self.loss_fn, outputs, targets, label_len, 0, self.inter_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def step_times(cfg, device: torch.device, dtype: torch.dtype | None, own_gru: bool, batch: int, seconds: float,
               repeats: int) -> list[float]:
    """Seconds of `repeats` steps of `cfg`'s model on the benchmark's batch, after two warm-up steps (oneDNN builds
    its kernels for the batch's shapes in the first)."""
    step = Stepper(cfg, device, dtype, own_gru)
    data = step.spread(batch, seconds)
    return [step(*data) for _ in range(repeats + 2)][2:]


def median_step_seconds(cfg, dtype: torch.dtype | None, batch: int = 32, seconds: float = 4.0,
                        repeats: int = 3) -> float:
    """Median seconds of a CPU training step of `cfg`'s model (asr.gru, `dtype` autocast or float32) on `batch`
    random inputs of 60-100% of `seconds`, after two warm-up steps."""
    return statistics.median(step_times(cfg, torch.device("cpu"), dtype, True, batch, seconds, repeats))
