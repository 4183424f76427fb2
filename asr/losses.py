"""CTC losses behind one interface, so training can switch implementation by name.

"asr" is our own (`asr.ctc.ctc_loss`, the default); "torch" is `torch.nn.functional.ctc_loss`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .ctc import ctc_loss


def torch_ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths, target_lengths,
                   blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> torch.Tensor:
    """PyTorch's own `torch.nn.functional.ctc_loss`, kept for comparison."""
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                      reduction=reduction, zero_infinity=zero_infinity)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"torch": torch_ctc_loss, "asr": ctc_loss}


def get_ctc_loss(name: str) -> Callable[..., torch.Tensor]:
    """The CTC loss function registered as `name` ("asr" or "torch")."""
    if name not in LOSSES:
        raise ValueError(f"unknown CTC loss {name!r}; available: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


class CTCLoss(nn.Module):
    """nn.Module form of a registered CTC loss."""

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False, impl: str = "asr"):
        super().__init__()
        self.blank, self.reduction, self.zero_infinity = blank, reduction, zero_infinity
        self.fn = get_ctc_loss(impl)

    def forward(self, log_probs, targets, input_lengths, target_lengths) -> torch.Tensor:
        return self.fn(log_probs, targets, input_lengths, target_lengths, blank=self.blank,
                       reduction=self.reduction, zero_infinity=self.zero_infinity)
