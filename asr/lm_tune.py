"""Choosing the LM weight (alpha) and word bonus (beta) on a dev set, from cached model outputs.

The acoustic model runs once; its log-probabilities are cached next to the model, and every
(alpha, beta) point only re-runs the beam search. The best point is written to decoding.json
beside the checkpoint, where `asr evaluate` and `asr transcribe` pick it up.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from .atomic import atomic_write, write_text_atomic
from .audio import load_utterances
from .decoding import CTCBeamDecoder
from .fork_pool import fork_map
from .inference import DECODING_FILE, Recognizer
from .manifest import read_manifest
from .metrics import word_errors

log = logging.getLogger("asr.lm")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_log_probs(checkpoint: str | Path, manifest: str | Path, device: str = "auto",
                     batch_size: int = 16) -> tuple[list[torch.Tensor], list[str], dict]:
    """Log-probs of every utterance of `manifest` (unreadable audio: empty), from a cache when still valid."""
    checkpoint, manifest = Path(checkpoint), Path(manifest)
    key = {"model": _file_digest(checkpoint), "manifest": _file_digest(manifest)}
    cache = checkpoint.parent / f"logprobs_{manifest.stem}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            log.info(f"using cached log-probs {cache}")
            return saved["log_probs"], saved["refs"], saved["info"]
    rec = Recognizer(checkpoint, device, batch_size, use_tuned=False)
    utts = read_manifest(manifest, scoring=True)
    waves, failures = load_utterances(utts, rec.sample_rate)
    for utt_id, reason in failures.items():
        log.warning(f"unreadable audio scored as empty hypothesis: {utt_id}: {reason}")
    failed = len(failures)
    ok = [i for i, w in enumerate(waves) if w is not None]
    lps = rec.log_probs([waves[i] for i in ok])
    log_probs = [torch.zeros(0, len(rec.vocab.labels))] * len(utts)
    for i, lp in zip(ok, lps):
        log_probs[i] = lp.contiguous()
    refs = [rec.vocab.normalize(u.text) for u in utts]
    info = {"labels": rec.vocab.labels, "blank": rec.vocab.blank, "frame_seconds": rec.frame_seconds,
            "failed_utterances": failed}
    with atomic_write(cache, "wb") as f:
        torch.save({"key": key, "log_probs": log_probs, "refs": refs, "info": info}, f)
    return log_probs, refs, info


def tune(checkpoint: str | Path, manifest: str | Path, lm: str | Path, alphas=ALPHAS, betas=BETAS, beam: int = 32,
         device: str = "auto", processes: int | None = None, write: bool = True) -> dict:
    """Grid-search alpha and beta for dev WER; write the best to decoding.json beside the model."""
    log_probs, refs, info = cached_log_probs(checkpoint, manifest, device)
    decoder = CTCBeamDecoder(info["labels"], info["blank"], str(lm), beam_width=beam,
                             frame_seconds=info["frame_seconds"])
    arrays = [lp.numpy() for lp in log_probs]
    greedy = CTCBeamDecoder(info["labels"], info["blank"], beam_width=1)
    greedy_wer = word_errors(refs, [greedy.decode(a) for a in arrays]).rate
    points = [(float(a), float(b)) for a in alphas for b in betas]
    t0 = time.time()
    wers = _grid_wers(decoder, arrays, refs, points, processes)
    grid = [{"alpha": a, "beta": b, "wer": w} for (a, b), w in zip(points, wers)]
    for g in grid:
        log.info(f"alpha {g['alpha']:5.2f} beta {g['beta']:5.2f}: dev WER {100 * g['wer']:6.2f}%")
    best = min(grid, key=lambda g: (g["wer"], g["alpha"], abs(g["beta"])))
    result = {"lm": str(Path(lm).resolve()), "alpha": best["alpha"], "beta": best["beta"], "beam": beam,
              "dev_wer": best["wer"], "greedy_dev_wer": greedy_wer, "manifest": str(manifest),
              "utterances": len(refs), "failed_utterances": info["failed_utterances"], "grid": grid,
              "seconds": round(time.time() - t0, 1)}
    if write:
        out = Path(checkpoint).parent / DECODING_FILE
        write_text_atomic(out, json.dumps(result, indent=2))
        result["written_to"] = str(out)
    return result


def _point_wer(shared: tuple, point: tuple[float, float]) -> float:
    decoder, arrays, refs = shared
    decoder.reset_params(alpha=point[0], beta=point[1])
    return word_errors(refs, [h[0].text for h in decoder.nbest_many(arrays, 1, processes=1)]).rate


def _grid_wers(decoder: CTCBeamDecoder, arrays: list, refs: list[str], points: list[tuple[float, float]],
               processes: int | None) -> list[float]:
    """Dev WER at each (alpha, beta). Workers are forked once for the whole grid and each keeps its LM
    cache warm over its points (forking per point cost seconds each after training had grown the process)."""
    if processes is None:
        processes = min(os.cpu_count() or 1, len(points))
    return fork_map(_point_wer, (decoder, arrays, refs), points, processes)


def format_tuning(result: dict) -> str:
    """The grid as a table, best point marked."""
    alphas = sorted({g["alpha"] for g in result["grid"]})
    betas = sorted({g["beta"] for g in result["grid"]})
    wer = {(g["alpha"], g["beta"]): g["wer"] for g in result["grid"]}
    lines = ["dev WER %  " + "".join(f"beta {b:<5g}" for b in betas)]
    for a in alphas:
        cells = []
        for b in betas:
            mark = "*" if (a, b) == (result["alpha"], result["beta"]) else " "
            cells.append(f"{100 * wer[(a, b)]:9.2f}{mark}")
        lines.append(f"alpha {a:<4g}" + "".join(cells))
    lines.append(f"best: alpha {result['alpha']:g}, beta {result['beta']:g}, beam {result['beam']}: dev WER "
                 f"{100 * result['dev_wer']:.2f}% (greedy {100 * result['greedy_dev_wer']:.2f}%)")
    if result.get("written_to"):
        lines.append(f"written to {result['written_to']}")
    return "\n".join(lines)
