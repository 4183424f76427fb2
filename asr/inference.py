"""Running a trained model over audio: checkpoint in, log-probabilities and text out."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .confidence import Calibration
from .decoding import CTCBeamDecoder, DecodingOptions, Hypothesis, greedy_decode
from .quantization import quantize_int8
from .streaming import Stream, check_streamable

log = logging.getLogger("asr.inference")
DECODING_FILE = "decoding.json"  # written by `asr lm tune` next to the model


def tuned_decoding(checkpoint: str | Path) -> dict | None:
    """The LM decoding settings `asr lm tune` chose for this model's folder, if any."""
    path = Path(checkpoint).parent / DECODING_FILE
    return json.loads(path.read_text()) if path.exists() else None


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


@dataclass(frozen=True)
class DecodeRequest:
    """The decoder a caller asks for. A setting left None takes what `asr lm tune` chose for the model (with
    `use_tuned`, when no decoder or the tuned LM is named: decoding.json beside the checkpoint), else
    DecodingOptions' default. Nothing asked and nothing tuned decodes greedily; hotwords alone take a beam search."""

    beam: int | None = None
    lm: str | Path | None = None
    alpha: float | None = None
    beta: float | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DecodingOptions.hotword_weight
    use_tuned: bool = True

    def resolve(self, checkpoint: str | Path) -> tuple[str | None, DecodingOptions] | None:
        """(LM path or None, the beam search's options) for `checkpoint`, or None for greedy decoding."""
        beam, lm, alpha, beta = self.beam, self.lm, self.alpha, self.beta
        tuned = tuned_decoding(checkpoint) if self.use_tuned else None
        if tuned and ((lm is None and not beam) or (lm is not None and Path(lm).resolve() == Path(tuned["lm"]).resolve())):
            log.info(f"using the LM decoding tuned by `asr lm tune`: {Path(checkpoint).parent / DECODING_FILE} "
                     f"(alpha {tuned['alpha']}, beta {tuned['beta']}, beam {tuned['beam']})")
            lm = lm or tuned["lm"]
            alpha = tuned["alpha"] if alpha is None else alpha
            beta = tuned["beta"] if beta is None else beta
            beam = beam or tuned["beam"]
        if not (beam or lm or self.hotwords):
            return None
        given = {"alpha": alpha, "beta": beta, "beam_width": beam or None}
        options = DecodingOptions(hotwords=tuple(self.hotwords), hotword_weight=self.hotword_weight,
                                  **{k: v for k, v in given.items() if v is not None})
        return (str(lm) if lm else None), options


class Recognizer:
    """A checkpoint loaded for inference, batching waveforms by length, decoding as `request` asks (greedy,
    beam search, KenLM fusion, hotwords; see DecodeRequest). `streaming` checks at once that the model can stream
    (`stream()`). `int8` runs the recurrent and linear layers with int8 weights (asr.quantization; CPU only).
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", batch_size: int = 16,
                 request: DecodeRequest = DecodeRequest(), streaming: bool = False, int8: bool = False):
        self.device = resolve_device("cpu" if int8 and device == "auto" else device)
        self.model, self.vocab, self.config = load_model(checkpoint, self.device)
        if int8:
            self.model = quantize_int8(self.model)
        self.int8 = int8
        self.calibration = Calibration.load(checkpoint)  # word confidence (asr calibrate); identity without one
        if streaming:  # before a slow LM load
            check_streamable(self.model)
        self.sample_rate = self.config.features.sample_rate
        self.batch_size = batch_size
        self.beam_decoder = None
        self._best_path: CTCBeamDecoder | None = None  # greedy with word timings, made when first needed
        search = request.resolve(checkpoint)
        if search:
            lm, options = search
            self.beam_decoder = CTCBeamDecoder(self.vocab.labels, self.vocab.blank, lm, options,
                                               frame_seconds=self.frame_seconds)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame (the model's geometry)."""
        return self.model.frame_seconds

    @property
    def decoder_name(self) -> str:
        if self.beam_decoder is None:
            return "greedy"
        name = f"beam{self.beam_decoder.beam_width}"
        return name + "+lm" if self.beam_decoder.lm is not None else name

    @property
    def decoder_settings(self) -> dict:
        """What decoded: for results files, so every number says how it was made."""
        d = self.beam_decoder
        precision = {"precision": "int8" if self.int8 else "float32"}
        if d is None:
            return {"decoder": "greedy", **precision}
        out = {"decoder": self.decoder_name, "beam": d.beam_width, "token_min_logp": d.token_min_logp,
               "beam_prune_logp": d.beam_prune_logp, **precision}
        if d.lm is not None:
            out.update(lm=str(d.lm.path), alpha=d.lm.alpha, beta=d.lm.beta, unk_offset=d.lm.unk_offset)
        return out

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
        return [h.text for h in self.hypotheses(log_probs)]

    def hypotheses(self, log_probs: Sequence[torch.Tensor]) -> list[Hypothesis]:
        """Best hypotheses with word timings (frames and seconds): the beam decoder's, else the best path's."""
        if self.beam_decoder is None and self._best_path is None:
            self._best_path = CTCBeamDecoder(self.vocab.labels, self.vocab.blank, beam_width=1,
                                             frame_seconds=self.frame_seconds)
        decoder = self.beam_decoder or self._best_path
        return [h[0] for h in decoder.nbest_many([lp.numpy() for lp in log_probs])]

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        return self.decode(self.log_probs(waves))

    def stream(self) -> Stream:
        """A streaming session on this model (unidirectional models with global or no feature normalisation),
        decoding with this recognizer's decoder: greedy, or the beam search (with its LM) frame by frame."""
        return Stream(self.model, self.vocab, self.beam_decoder)
