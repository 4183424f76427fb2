"""Streaming recognition with a unidirectional model: audio in as it arrives, text out as it is decided.

A `Stream` gives the same log-probabilities as the model's whole-utterance forward pass (to float rounding),
because every stage keeps exactly the context it needs and emits a frame only once all it depends on has
arrived: half a window of samples for the STFT, the conv stack's receptive field in feature frames, the RNN
states, and `model.lookahead` frames for the row convolution. The delay beyond the chunk size is therefore
fixed by the model (`right_context_seconds`). Models that see the whole utterance (bidirectional RNNs,
per-utterance feature normalisation) cannot stream; train with `model.bidirectional=false` and
`features.normalize=global` (conf/ds2_streaming.yaml).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .decoding import CTCBeamDecoder, Hypothesis, best_path
from .model import DeepSpeech2
from .text import Vocabulary


class StreamingError(ValueError):
    pass


def check_streamable(model: DeepSpeech2) -> None:
    """Raise StreamingError naming the config key that stops `model` from streaming."""
    if model.cfg.bidirectional:
        raise StreamingError("this model cannot stream: its RNNs are bidirectional (they read the whole utterance); "
                             "train one with model.bidirectional=false (and model.lookahead=N for right context)")
    if model.frontend.cfg.normalize == "utterance":
        raise StreamingError("this model cannot stream: features.normalize=utterance needs the whole utterance; "
                             "train one with features.normalize=global")
    if model.training:
        raise StreamingError("put the model in eval mode before streaming (BatchNorm and dropout)")


class Stream:
    """One utterance fed in chunks: `accept(samples)` and finally `finish()`; each returns the new log-prob
    frames (T, C) that became final. `text` is the transcript so far: greedy, or with a `decoder` the best
    beam of its prefix search (LM-fused where it has an LM), kept up to date frame by frame."""

    def __init__(self, model: DeepSpeech2, vocab: Vocabulary, decoder: CTCBeamDecoder | None = None):
        check_streamable(model)
        self.model, self.vocab, self.decoder = model, vocab, decoder
        fe = model.frontend
        self.sample_rate = fe.cfg.sample_rate
        self.hop, self.n_fft, self.half = fe.hop_length, fe.n_fft, fe.n_fft // 2
        self.device = fe.window.device
        self._convs = model.conv_time_geometry
        self._stride = model.time_stride
        self.reset()

    def reset(self) -> None:
        """Forget the current utterance and start a new one."""
        self._audio = torch.zeros(self.half)  # centring pad, then samples not yet framed
        self._audio_start = 0  # index of _audio[0] in the padded signal
        self._samples = 0
        self._feats = torch.zeros(self.model.frontend.num_features, 0, device=self.device)
        self._feat_start = self._feat_end = 0  # feature frames kept: [start, end)
        self._out_next = 0  # next conv-stack output frame
        self._states: list = [None] * len(self.model.rnns)
        self._held = torch.zeros(0, 1, self.model.cfg.rnn_hidden, device=self.device)  # awaiting lookahead
        self._ids: list[int] = []
        self._last = self.vocab.blank
        self._search = self.decoder.stream() if self.decoder is not None else None
        self._text = ""
        self.hypothesis: Hypothesis | None = None  # the decoder's final hypothesis (words timed), after finish()
        self.frames = 0
        self.finished = False

    @property
    def right_context_seconds(self) -> float:
        """Audio after an output frame's own time that it waits for: conv kernels, STFT window and lookahead."""
        frames = self._field(0)[1] + self.model.cfg.lookahead * self._stride
        return (frames * self.hop + self.n_fft - self.half) / self.sample_rate

    @property
    def seconds(self) -> float:
        """Audio received so far."""
        return self._samples / self.sample_rate

    @property
    def text(self) -> str:
        """Transcript of the frames emitted so far (after finish(): the final one)."""
        return self._text if self._search is not None else self.vocab.decode(self._ids)

    @torch.no_grad()
    def accept(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Feed the next mono samples at the model's rate (floats in [-1, 1], or integer PCM such as int16, scaled
        to that range); returns the log-prob frames now final."""
        if self.finished:
            raise StreamingError("the stream is finished; reset() starts a new utterance")
        samples = np.asarray(samples)
        if np.issubdtype(samples.dtype, np.integer):
            samples = samples / float(-np.iinfo(samples.dtype).min)
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        if x.ndim != 1:
            raise StreamingError(f"expected mono samples (one dimension), got shape {tuple(x.shape)}")
        self._samples += len(x)
        self._audio = torch.cat([self._audio, x])
        return self._advance(final=False)

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """The end of the utterance: returns the last log-prob frames."""
        if self.finished:
            raise StreamingError("the stream is already finished")
        self.finished = True
        if self._samples == 0:
            lp = torch.zeros(0, self.model.num_classes)
        else:
            total = int(self.model.frontend.frame_lengths(torch.tensor(self._samples)))
            short = (total - 1) * self.hop + self.n_fft - (self._audio_start + len(self._audio))
            self._audio = torch.cat([self._audio, torch.zeros(max(short, 0))])
            lp = self._advance(final=True)
        if self._search is not None:
            self.hypothesis = self._search.result(1)[0]
            self._text = self.hypothesis.text
        return lp

    def _field(self, j: int) -> tuple[int, int]:
        """First and last feature frame that conv-stack output frame j depends on."""
        lo = hi = j
        for k, s, p in reversed(self._convs):
            lo, hi = lo * s - p, hi * s - p + k - 1
        return lo, hi

    def _advance(self, final: bool) -> torch.Tensor:
        fe = self.model.frontend
        avail = self._audio_start + len(self._audio)
        end = (avail - self.n_fft) // self.hop + 1 if avail >= self.n_fft else 0
        if end > self._feat_end:
            a = self._feat_end * self.hop - self._audio_start
            b = (end - 1) * self.hop + self.n_fft - self._audio_start
            seg = self._audio[a:b].to(self.device)
            self._feats = torch.cat([self._feats, fe.normalize_global(fe.log_spectrum(seg[None]))[0]], dim=-1)
            self._feat_end = end
            drop = end * self.hop - self._audio_start
            self._audio, self._audio_start = self._audio[drop:], end * self.hop
        if final:
            out_end = int(self.model.output_lengths(torch.tensor([self._feat_end])))
        else:
            last = self._field(0)[1]
            out_end = max(0, (self._feat_end - 1 - last) // self._stride + 1)
        if out_end <= self._out_next:
            return self._emit(torch.zeros(0, 1, self._held.shape[-1], device=self.device), final)
        a = max(0, self._field(self._out_next)[0] // self._stride * self._stride)
        window = self._feats[:, a - self._feat_start:]
        x, _ = self.model.conv(window[None, None], torch.tensor([self._feat_end - a], device=self.device))
        first = a // self._stride
        x = x[..., self._out_next - first: out_end - first]
        x = x.reshape(1, -1, x.shape[-1]).permute(2, 0, 1)  # (T, 1, H)
        self._out_next = out_end
        keep = max(0, self._field(out_end)[0] // self._stride * self._stride)
        self._feats, self._feat_start = self._feats[:, keep - self._feat_start:], keep
        for i, rnn in enumerate(self.model.rnns):
            x, self._states[i] = rnn.step(x, self._states[i])
        return self._emit(x, final)

    def _emit(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        la = self.model.lookahead
        if la is not None:
            self._held = torch.cat([self._held, x])
            if final:
                x, self._held = la(self._held), self._held[:0]
            elif len(self._held) > la.context:
                x = F.hardtanh(la.conv(self._held.permute(1, 2, 0)), 0, 20).permute(2, 0, 1)
                self._held = self._held[len(self._held) - la.context:]
            else:
                x = self._held[:0]
        lp = F.log_softmax(self.model.head(x[:, 0]).float(), dim=-1) if len(x) else torch.zeros(
            0, self.model.num_classes, device=self.device)
        lp = lp.cpu()
        if self._search is not None:
            if len(lp):
                self._search.advance(lp.numpy())
                self._text = self._search.best(1)[0].text
        else:
            best = lp.argmax(-1).numpy()
            self._ids += best[best_path(best, self.vocab.blank, self._last)].tolist()
            self._last = int(best[-1]) if len(best) else self._last
        self.frames += len(lp)
        return lp
