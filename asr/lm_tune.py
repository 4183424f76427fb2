"""Choosing the LM weight (alpha) and word bonus (beta) on a dev set, from cached model outputs.

The acoustic model runs once; its log-probabilities are cached next to the model, and every
(alpha, beta) point only re-runs the beam search. The search walks the grid from its centre to a
point no neighbour beats (SEARCHES); the best point is written to decoding.json beside the
checkpoint, where `asr evaluate` and `asr transcribe` pick it up.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .atomic import atomic_write, write_text_atomic
from .audio import load_utterances
from .decoding import CTCBeamDecoder
from .fork_pool import fork_map
from .inference import DECODING_FILE, DecodeRequest, Recognizer
from .manifest import read_manifest
from .metrics import word_errors

log = logging.getLogger("asr.lm")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)
# "local": from the grid's centre, decode the 3x3 neighbourhood, move to its best point, repeat until the centre is
# the best: 9-12 of the 35 default points, and the whole grid's optimum on every grid measured (RESULTS.md of
# synthetic_en); "grid": every point, for a full table
SEARCHES = ("local", "grid")


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
    rec = Recognizer(checkpoint, device, batch_size, DecodeRequest(use_tuned=False))
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
         device: str = "auto", processes: int | None = None, write: bool = True, search: str = "local") -> dict:
    """Search the grid alphas x betas for dev WER (`search`: one of SEARCHES); write the best point to
    decoding.json beside the model."""
    if search not in SEARCHES:
        raise ValueError(f"search {search!r}: must be one of {', '.join(SEARCHES)}")
    log_probs, refs, info = cached_log_probs(checkpoint, manifest, device)
    decoder = CTCBeamDecoder(info["labels"], info["blank"], str(lm), beam_width=beam,
                             frame_seconds=info["frame_seconds"])
    arrays = [lp.numpy() for lp in log_probs]
    greedy = CTCBeamDecoder(info["labels"], info["blank"], beam_width=1)
    greedy_wer = word_errors(refs, [greedy.decode(a) for a in arrays]).rate
    alphas, betas = sorted({float(a) for a in alphas}), sorted({float(b) for b in betas})
    t0 = time.time()

    def wers(points: list[tuple[float, float]]) -> list[float]:
        return _grid_wers(decoder, arrays, refs, points, processes)

    if search == "grid":
        points = [(a, b) for a in alphas for b in betas]
        found = dict(zip(points, wers(points)))
    else:
        found = local_search(wers, alphas, betas)
    grid = [{"alpha": a, "beta": b, "wer": found[(a, b)]} for a in alphas for b in betas if (a, b) in found]
    for g in grid:
        log.info(f"alpha {g['alpha']:5.2f} beta {g['beta']:5.2f}: dev WER {100 * g['wer']:6.2f}%")
    best = min(grid, key=_rank)
    result = {"lm": str(Path(lm).resolve()), "alpha": best["alpha"], "beta": best["beta"], "beam": beam,
              "dev_wer": best["wer"], "greedy_dev_wer": greedy_wer, "manifest": str(manifest),
              "utterances": len(refs), "failed_utterances": info["failed_utterances"], "search": search,
              "alphas": alphas, "betas": betas, "grid": grid, "seconds": round(time.time() - t0, 1)}
    if write:
        out = Path(checkpoint).parent / DECODING_FILE
        write_text_atomic(out, json.dumps(result, indent=2))
        result["written_to"] = str(out)
    return result


def _rank(g: dict) -> tuple[float, float, float]:
    """Lowest WER first; on a tie the smaller LM weight, then the smaller bonus."""
    return g["wer"], g["alpha"], abs(g["beta"])


def local_search(wers: Callable[[list[tuple[float, float]]], list[float]], alphas: list[float],
                 betas: list[float]) -> dict[tuple[float, float], float]:
    """The WER of every point visited walking the sorted grid from its centre: each step decodes the unseen
    points of the current point's 3x3 neighbourhood in one batch (`wers`) and moves to the best point seen, until
    the current point is the best. On a grid of at most 3 x 3 that is the whole grid."""
    found: dict[tuple[int, int], float] = {}
    here = ((len(alphas) - 1) // 2, (len(betas) - 1) // 2)
    while True:
        todo = [(i, j) for i in range(here[0] - 1, here[0] + 2) for j in range(here[1] - 1, here[1] + 2)
                if 0 <= i < len(alphas) and 0 <= j < len(betas) and (i, j) not in found]
        if todo:
            found.update(zip(todo, wers([(alphas[i], betas[j]) for i, j in todo])))
        best = min(found, key=lambda p: _rank({"wer": found[p], "alpha": alphas[p[0]], "beta": betas[p[1]]}))
        if best == here:
            return {(alphas[i], betas[j]): w for (i, j), w in found.items()}
        here = best


def _point_wer(shared: tuple, point: tuple[float, float]) -> float:
    decoder, arrays, refs = shared
    decoder.reset_params(alpha=point[0], beta=point[1])
    return word_errors(refs, [h[0].text for h in decoder.nbest_many(arrays, 1, processes=1)]).rate


def _grid_wers(decoder: CTCBeamDecoder, arrays: list, refs: list[str], points: list[tuple[float, float]],
               processes: int | None) -> list[float]:
    """Dev WER at each (alpha, beta). Workers are forked once per batch of points and each keeps its LM
    cache warm over its points (forking per point cost seconds each after training had grown the process)."""
    if processes is None:
        processes = min(os.cpu_count() or 1, len(points))
    return fork_map(_point_wer, (decoder, arrays, refs), points, processes)


def format_tuning(result: dict) -> str:
    """The grid as a table, best point marked, points the search did not visit as '-'."""
    alphas = result.get("alphas") or sorted({g["alpha"] for g in result["grid"]})
    betas = result.get("betas") or sorted({g["beta"] for g in result["grid"]})
    wer = {(g["alpha"], g["beta"]): g["wer"] for g in result["grid"]}
    lines = ["dev WER %  " + "".join(f"beta {b:<5g}" for b in betas)]
    for a in alphas:
        cells = []
        for b in betas:
            mark = "*" if (a, b) == (result["alpha"], result["beta"]) else " "
            cells.append(f"{100 * wer[(a, b)]:9.2f}{mark}" if (a, b) in wer else f"{'-':>9} ")
        lines.append(f"alpha {a:<4g}" + "".join(cells))
    lines.append(f"best: alpha {result['alpha']:g}, beta {result['beta']:g}, beam {result['beam']}: dev WER "
                 f"{100 * result['dev_wer']:.2f}% (greedy {100 * result['greedy_dev_wer']:.2f}%); "
                 f"{len(wer)} of {len(alphas) * len(betas)} points decoded ({result.get('search', 'grid')} search)")
    if result.get("written_to"):
        lines.append(f"written to {result['written_to']}")
    return "\n".join(lines)
