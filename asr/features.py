"""Acoustic features computed on whole padded batches with torch.stft, on the model's device.

The extractor is part of the model (an nn.Module with its window, mel filters and global
statistics as buffers), so a checkpoint carries everything needed to turn audio into input.
Text-line images (kind "image") arrive as signals of their columns (asr.images): a column is a frame
and its pixels are the bins.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .config import FeatureConfig, SpecAugmentConfig

_EPS = 1e-6


class FeatureExtractor(nn.Module):
    """Waveforms (N, L) + lengths -> features (N, F, T) + frame counts."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.win_length, self.hop_length = window_samples(cfg), hop_samples(cfg)
        self.n_fft = self.win_length
        self.f_max = float(cfg.f_max or cfg.sample_rate / 2)
        self.register_buffer("window", torch.hamming_window(self.win_length, periodic=False), persistent=False)
        if cfg.kind == "logmel":
            import librosa

            fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=self.n_fft, n_mels=cfg.n_mels, fmax=self.f_max)
            self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("global_mean", torch.zeros(self.num_features))
        self.register_buffer("global_std", torch.ones(self.num_features))

    @property
    def num_features(self) -> int:
        if self.cfg.kind == "logmel":
            return self.cfg.n_mels
        if self.cfg.kind == "image":
            return self.cfg.image_height
        return int(self.f_max * self.n_fft / self.cfg.sample_rate) + 1  # linear bins up to f_max

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Frames that `torch.stft(center=True)` gives for each waveform length (one less for an odd window
        when the length is a multiple of the hop); for images, whole columns."""
        if self.cfg.kind == "image":
            return sample_lengths // self.hop_length
        return frame_count(sample_lengths, self.n_fft, self.hop_length)

    def log_spectrum(self, padded: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """Log features (N, F, T) of the whole windows in `padded` (N, L), frame t starting at sample t * hop.

        `raw` pads by half a window on each side first (torch.stft's centring); a stream pads its start alone.
        """
        spec = torch.stft(padded.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=False, return_complex=True)
        # |X|^2 from the real and imaginary parts: a complex abs (hypot) then a square took 6x longer
        power = torch.addcmul(spec.real * spec.real, spec.imag, spec.imag)
        if warp is not None:  # VTLP interpolates magnitudes
            power = vtlp(power.sqrt(), warp).square()
        if self.cfg.kind == "logmel":
            return torch.log(torch.matmul(self.mel_fb, power) + _EPS)
        return torch.log1p(power[:, : self.num_features].sqrt())

    def raw(self, waves: torch.Tensor, lengths: torch.Tensor,
            warp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised log features; padded frames are zero. `warp`: per-utterance VTLP factors."""
        if self.cfg.kind == "image":
            return self.columns(waves, lengths)
        half = self.n_fft // 2
        feats = self.log_spectrum(F.pad(waves.float(), (half, half)), warp)
        frames = self.frame_lengths(lengths.to(feats.device))
        mask = torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None]
        return feats * mask[:, None, :], frames

    def columns(self, signals: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, height x width, column-major, zero padded) -> pixels (N, height, width), frame counts."""
        n, h = signals.shape[0], self.cfg.image_height
        t = signals.shape[1] // h
        pixels = signals[:, : t * h].float().reshape(n, t, h).transpose(1, 2)
        frames = self.frame_lengths(lengths.to(pixels.device))
        mask = torch.arange(t, device=pixels.device)[None, :] < frames[:, None]
        return pixels * mask[:, None, :], frames

    def normalize_global(self, feats: torch.Tensor) -> torch.Tensor:
        """Features with the training set's mean and std taken out (or as they are, with normalize=none)."""
        if self.cfg.normalize == "global":
            return (feats - self.global_mean[:, None]) / self.global_std[:, None]
        return feats

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor,
                warp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.raw(waves, lengths, warp)
        mask = (torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None])[:, None, :]
        if self.cfg.normalize == "utterance":
            n = frames.clamp(min=1)[:, None, None].to(feats.dtype)
            mean = feats.sum(-1, keepdim=True) / n
            var = ((feats - mean) * mask).pow(2).sum(-1, keepdim=True) / n
            feats = (feats - mean) / (var.sqrt() + 1e-5)
        else:
            feats = self.normalize_global(feats)
        return feats * mask, frames

    @torch.no_grad()
    def fit_global_stats(self, batches) -> None:
        """Set the global mean/std from (waves, lengths) batches of training audio."""
        total = torch.zeros(self.num_features, dtype=torch.float64)
        sq = torch.zeros_like(total)
        count = 0
        for waves, lengths in batches:
            feats, frames = self.raw(waves.to(self.window.device), lengths)
            total += feats.sum(dim=(0, 2)).double().cpu()
            sq += feats.pow(2).sum(dim=(0, 2)).double().cpu()
            count += int(frames.sum())
        mean = total / max(count, 1)
        std = (sq / max(count, 1) - mean.pow(2)).clamp(min=1e-10).sqrt()
        self.global_mean.copy_(mean.float())
        self.global_std.copy_(std.float())


def vtlp(mag: torch.Tensor, alpha: torch.Tensor, boundary: float = 0.6) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013) of magnitude spectra (N, F, T).

    Utterance i's frequency axis is scaled by alpha[i] (formants move up for alpha > 1), linearly up
    to `boundary` x Nyquist and then piecewise-linearly so that Nyquist stays Nyquist: a new speaker
    with a longer or shorter vocal tract, for the cost of one interpolation.
    """
    n, f, t = mag.shape
    out_freq = torch.linspace(0.0, 1.0, f, device=mag.device)[None, :]  # fractions of Nyquist
    a = alpha.to(mag.device, torch.float32)[:, None]
    knee_out = boundary * a.clamp(max=1.0)
    knee_in = knee_out / a
    src = torch.where(out_freq <= knee_out, out_freq / a,
                      1.0 - (1.0 - out_freq) * (1.0 - knee_in) / (1.0 - knee_out))
    pos = (src * (f - 1)).clamp(0, f - 1)
    lo = pos.floor().long().clamp(max=f - 2)
    frac = (pos - lo)[:, :, None]
    lo = lo[:, :, None].expand(n, f, t)
    return mag.gather(1, lo) * (1 - frac) + mag.gather(1, lo + 1) * frac


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019): zero random frequency bands and time spans, per utterance."""
    if not cfg.enabled:
        return feats
    n, f, t = feats.shape
    device = feats.device
    keep = torch.ones(n, f, t, dtype=torch.bool, device=device)
    bins = torch.arange(f, device=device)[None, :]
    frames = torch.arange(t, device=device)[None, :]

    def rand(size, high):
        return torch.rand(size, generator=generator).to(device) * high

    for _ in range(cfg.freq_masks):
        width = rand(n, cfg.freq_width + 1).floor()
        start = rand(n, 1.0) * (f - width).clamp(min=0)
        band = (bins >= start[:, None]) & (bins < (start + width)[:, None])
        keep &= ~band[:, :, None]
    for _ in range(cfg.time_masks):
        max_width = (lengths.to(device).float() * cfg.time_width).floor()
        width = (rand(n, 1.0) * (max_width + 1)).floor()
        start = rand(n, 1.0) * (lengths.to(device).float() - width).clamp(min=0)
        span = (frames >= start[:, None]) & (frames < (start + width)[:, None])
        keep &= ~span[:, None, :]
    return feats * keep


def window_samples(cfg: FeatureConfig) -> int:
    return int(round(cfg.sample_rate * cfg.window_ms / 1000))


def hop_samples(cfg: FeatureConfig) -> int:
    return int(round(cfg.sample_rate * cfg.hop_ms / 1000))


def frame_count(samples, n_fft: int, hop: int):
    """Frames `torch.stft(center=True)` gives for `samples` (an int or a tensor of them)."""
    return (samples - n_fft % 2) // hop + 1


def num_frames(duration_s: float, cfg: FeatureConfig) -> int:
    """Feature frames for `duration_s` seconds of audio."""
    return frame_count(int(round(duration_s * cfg.sample_rate)), window_samples(cfg), hop_samples(cfg))
