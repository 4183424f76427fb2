"""Zero rows that round a bf16 matrix product's row count up, so oneDNN meets shapes it has built before.

oneDNN, which runs PyTorch's bf16 products on CPUs, builds (JIT-compiles) a kernel for every new shape.
A training batch's packed frames number differently every time, and building those kernels cost about a
third of a bf16 training step; with the rows rounded up to multiples of ROWS a few dozen shapes recur all
training long (benchmarks/RESULTS.md). Float32 products run in MKL, which builds nothing: they stay as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS = 256


def pad_rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`x` (N, D), followed by zero rows up to a multiple of ROWS where products in `dtype` run in oneDNN."""
    if dtype != torch.bfloat16:
        return x
    return F.pad(x, (0, 0, 0, -x.shape[0] % ROWS))


def product_dtype(x: torch.Tensor, default: torch.dtype) -> torch.dtype:
    """The dtype products with `x` run in: autocast's where it is on for `x`'s device, else `default`."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else default


def linear_rows(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)` for rows `x` (N, D), its product over padded rows under bf16 autocast."""
    return linear(pad_rows(x, product_dtype(x, x.dtype)))[:x.shape[0]]
