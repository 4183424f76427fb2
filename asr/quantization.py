"""int8 inference on the CPU: PyTorch's dynamic quantisation of the model's recurrent and linear layers.

Weights of the GRU/LSTM stack and the CTC head are stored as int8 and each batch's activations are quantised on the
fly, so nothing needs calibration data. The conv stack and the feature front-end stay float32 (dynamic quantisation
has no convolutions). Word error rates and speed against float32 are in benchmarks/real_speech.py (--int8).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` for CPU inference (`model` itself is left float32)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 inference runs on the CPU: load the model with device='cpu'")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.GRU, nn.LSTM, nn.Linear}, dtype=torch.qint8)
