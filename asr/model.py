"""DeepSpeech2 (Amodei et al. 2016): strided 2-D convolutions, a stack of RNNs, a linear CTC head.

Bidirectional models sum the two directions (as deepspeech.pytorch does); unidirectional
models may add a lookahead row convolution for streaming. Sequence-wise BatchNorm
normalises over the valid frames of the whole batch (padding excluded).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .config import CONV_LAYERS_MOST, FeatureConfig, ModelConfig, check_feature_bins
from .features import FeatureExtractor
from .gru import gru_packed
from .row_padding import linear_rows

# (kernel freq, kernel time, stride freq, stride time) of the paper's conv layers
_CONV = [(41, 11, 2, 2), (21, 11, 2, 1), (21, 11, 2, 1)]


def conv_shapes(cfg: ModelConfig) -> list[tuple[int, int, int, int, int]]:
    """(channels, kernel freq, kernel time, stride freq, stride time) of each conv layer.

    "ds2": the paper's wide kernels, `conv_channels` each. "vgg": 3x3 kernels as in CRNN line recognisers,
    the first layer at full height, each later one halving it, channels doubling up to 4x `conv_channels`.
    "subsample": 3x3 kernels halving the frequency rows at every layer, `conv_channels` each, as in the
    convolutional subsampling of WeNet and ESPnet (a first layer of time stride s > 2 is 2s - 1 frames wide, so
    its windows overlap): a thirteenth of the "ds2" pair's multiply-adds on 64 mel bins. A "vgg" first layer of
    time stride s > 3 is s frames wide, so its windows tile the line.
    Every kind's first layer takes `conv_time_stride` in time; later "ds2" layers are `conv_time_kernel` wide.
    """
    most = CONV_LAYERS_MOST[cfg.conv_kind]
    if not 1 <= cfg.conv_layers <= most:
        raise ValueError(f"model.conv_layers = {cfg.conv_layers}: must be 1 to {most} with model.conv_kind={cfg.conv_kind}")
    shapes = []
    for i in range(cfg.conv_layers):
        st = cfg.conv_time_stride if i == 0 else 1
        if cfg.conv_kind == "ds2":
            kf, kt, sf, _ = _CONV[i]
            channels, kt = cfg.conv_channels, kt if i == 0 else cfg.conv_time_kernel
        elif cfg.conv_kind == "subsample":
            kf, kt, sf, channels = 3, 3 if st <= 2 else 2 * st - 1, 2, cfg.conv_channels
        else:
            kf, kt, sf = 3, max(3, st), 1 if i == 0 else 2
            channels = cfg.conv_channels * 2 ** min(i, 2)
        shapes.append((channels, kf, kt, sf, st))
    return shapes


def conv_stack(cfg: ModelConfig, freq: int) -> tuple[list[nn.Module], int, int]:
    """Conv/BatchNorm/Hardtanh layers over `freq` feature rows, and the rows and channels they leave."""
    layers: list[nn.Module] = []
    in_ch = 1
    for channels, kf, kt, sf, st in conv_shapes(cfg):
        layers += [
            nn.Conv2d(in_ch, channels, (kf, kt), (sf, st), (kf // 2, kt // 2), bias=False),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20, inplace=True),
        ]
        freq = (freq + 2 * (kf // 2) - kf) // sf + 1
        in_ch = channels
    return layers, freq, in_ch


def time_geometry(conv: nn.Conv2d) -> tuple[int, int, int]:
    """(kernel, stride, padding) of a (freq, time) conv in time."""
    return conv.kernel_size[1], conv.stride[1], conv.padding[1]


def conv_output_frames(lengths: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Frames a conv of this time geometry gives for `lengths` input frames."""
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


class _MaskedConv(nn.Module):
    """Conv/BN/Hardtanh layers that zero the padded frames after every layer."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.channels_last = False

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                lengths = conv_output_frames(lengths, *time_geometry(layer))
            mask = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None].to(x.device)
            x = x * mask[:, None, None, :]
        if self.channels_last and x.requires_grad:
            x = _ChannelsLastGrad.apply(x)
        return x, lengths


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose gradient goes back channels-last. The reshape after the convs hands back a contiguous
    gradient, and BatchNorm's backward over a channels-last input and a contiguous gradient took 5x longer
    (28 against 5.6 ms for the default's last conv layer with AVX2 kernels)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


class _BatchRNN(nn.Module):
    def __init__(self, input_size: int, hidden: int, rnn_type: str, bidirectional: bool, batch_norm: bool):
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size) if batch_norm else None
        rnn = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.rnn = rnn(input_size, hidden, bidirectional=bidirectional, batch_first=False)
        self.bidirectional = bidirectional
        self.hidden = hidden
        self.own_cpu_gru = True

    def forward(self, x: PackedSequence) -> PackedSequence:
        if self.norm is not None:
            x = x._replace(data=self.norm(x.data))
        if (self.own_cpu_gru and isinstance(self.rnn, nn.GRU) and self.training and torch.is_grad_enabled()
                and x.data.device.type == "cpu"):
            return gru_packed(self.rnn, x, sum_directions=True)
        x, _ = self.rnn(x)
        if self.bidirectional:
            x = x._replace(data=x.data[:, : self.hidden] + x.data[:, self.hidden:])
        return x

    def step(self, x: torch.Tensor, state=None) -> tuple[torch.Tensor, object]:
        """A unidirectional layer over the next frames (T, N, H) of a stream, from the state the last call left."""
        if self.norm is not None:
            x = self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return self.rnn(x, state)


class Lookahead(nn.Module):
    """Row convolution over `context` future frames (DeepSpeech2 section 3.5)."""

    def __init__(self, features: int, context: int):
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(features, features, context + 1, groups=features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, N, H)
        y = F.pad(x.permute(1, 2, 0), (0, self.context))
        return F.hardtanh(self.conv(y), 0, 20).permute(2, 0, 1)


class DeepSpeech2(nn.Module):
    """Waveforms -> (log-probs (N, T', C), output lengths)."""

    def __init__(self, model_cfg: ModelConfig, feature_cfg: FeatureConfig, num_classes: int):
        super().__init__()
        self.cfg = model_cfg
        self.num_classes = num_classes
        check_feature_bins(feature_cfg)
        self.frontend = FeatureExtractor(feature_cfg)
        layers, freq, in_ch = conv_stack(model_cfg, self.frontend.num_features)
        self.conv = _MaskedConv(layers)
        rnn_input = in_ch * freq
        self.rnns = nn.ModuleList()
        for i in range(model_cfg.rnn_layers):
            self.rnns.append(_BatchRNN(
                rnn_input if i == 0 else model_cfg.rnn_hidden, model_cfg.rnn_hidden, model_cfg.rnn_type,
                model_cfg.bidirectional, batch_norm=model_cfg.rnn_batch_norm and i > 0,
            ))
        self.lookahead = Lookahead(model_cfg.rnn_hidden, model_cfg.lookahead) if model_cfg.lookahead else None
        self.dropout = nn.Dropout(model_cfg.dropout)
        self.head = self._ctc_head()
        self.inter_head = self._ctc_head() if model_cfg.inter_ctc_layer else None

    def _ctc_head(self) -> nn.Sequential:
        return nn.Sequential(nn.BatchNorm1d(self.cfg.rnn_hidden),
                             nn.Linear(self.cfg.rnn_hidden, self.num_classes, bias=self.cfg.head_bias))

    # ---------------------------------------------------------------- geometry in time: everyone asks here
    @property
    def conv_time_geometry(self) -> list[tuple[int, int, int]]:
        """(kernel, stride, padding) in time of each conv layer, first to last."""
        return [time_geometry(layer) for layer in self.conv.layers if isinstance(layer, nn.Conv2d)]

    @property
    def time_stride(self) -> int:
        """Feature frames per output frame."""
        return math.prod(s for _, s, _ in self.conv_time_geometry)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame: the feature hop times the conv time strides."""
        return self.frontend.hop_length * self.time_stride / self.frontend.cfg.sample_rate

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames after the conv strides, for input feature frames."""
        lengths = frame_lengths
        for k, s, p in self.conv_time_geometry:
            lengths = conv_output_frames(lengths, k, s, p)
        return lengths

    def forward_features(self, feats: torch.Tensor, frames: torch.Tensor, intermediate: bool = False
                         ) -> tuple[torch.Tensor, ...]:
        """Features (N, F, T) -> log-probs (N, T', C) and output lengths; with `intermediate` (training with
        model.inter_ctc_layer) also the intermediate head's log-probs."""
        x, lengths = self.conv(feats.unsqueeze(1), frames)
        n, c, f, t = x.shape
        x = x.reshape(n, c * f, t).permute(2, 0, 1)  # (T, N, H)
        lengths_cpu = lengths.cpu()
        packed = pack_padded_sequence(x, lengths_cpu, enforce_sorted=False)
        inter = None
        for i, rnn in enumerate(self.rnns, start=1):
            packed = rnn(self.dropout_packed(packed))
            if intermediate and i == self.cfg.inter_ctc_layer:
                inter = self._log_probs(self.inter_head, pad_packed_sequence(packed, total_length=t)[0], lengths)
        x, _ = pad_packed_sequence(packed, total_length=t)
        if self.lookahead is not None:
            x = self.lookahead(x)
        lengths = lengths.to(x.device)
        if intermediate:
            return self._log_probs(self.head, x, lengths), lengths, inter
        return self._log_probs(self.head, x, lengths), lengths

    def _log_probs(self, head: nn.Sequential, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A CTC head over the valid frames of RNN outputs (T, N, H) -> log-probs (N, T, C)."""
        t, n, _ = x.shape
        x = x.permute(1, 0, 2)  # (N, T, H)
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None].to(x.device)
        h = x[valid]
        logits = torch.zeros(n, t, self.num_classes, device=x.device, dtype=h.dtype)
        logits[valid] = linear_rows(head[1], head[0](h)).to(logits.dtype)
        return F.log_softmax(logits.float(), dim=-1)

    def use_channels_last(self, enabled: bool) -> None:
        """Run the conv stack channels-last (weights and activations). oneDNN's NHWC kernels make a float32
        training step 1.26x faster with AVX2 (the one-channel first layer's weight gradient 5x), no faster with
        AVX-512, and a bf16 one 1.14x slower (benchmarks/training_step.py), so training takes it for float32."""
        self.conv.channels_last = enabled
        self.conv.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def use_own_cpu_gru(self, enabled: bool) -> None:
        """Train GRUs on CPUs with asr.gru (default; same results, faster backward) or with nn.GRU's autograd."""
        for rnn in self.rnns:
            rnn.own_cpu_gru = enabled

    def compile_features_and_conv(self, **kwargs) -> None:
        """torch.compile the feature front-end and the conv stack in place (parameter names unchanged).

        The RNNs run packed sequences on their own fused kernels and stay eager. Shapes are dynamic
        (every batch has its own length), which needs inductor's channels-last layout choice off:
        with it, torch 2.13 cannot order the strides of a strided conv's symbolic output. Even so,
        torch 2.13 guards on the strided conv's output size, so each new batch length compiles the
        conv stack again (until torch._dynamo's recompile limit, then it runs eagerly).
        """
        import torch._inductor.config as inductor_config

        inductor_config.layout_optimization = False
        self.frontend.compile(dynamic=True, **kwargs)
        self.conv.compile(dynamic=True, **kwargs)

    def dropout_packed(self, packed: PackedSequence) -> PackedSequence:
        if self.cfg.dropout and self.training:
            return packed._replace(data=self.dropout(packed.data))
        return packed

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.frontend(waves, lengths)
        return self.forward_features(feats, frames)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
