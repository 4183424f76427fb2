"""Scoring a model on a test manifest: corpus WER/CER and a per-utterance report."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .atomic import atomic_write, write_text_atomic
from .audio import load_utterances
from .inference import Recognizer
from .manifest import read_manifest
from .metrics import alignment, score, word_errors
from .text import normalize_text

log = logging.getLogger("asr.evaluate")


def evaluate(checkpoint: str | Path, manifest: str | Path, out_dir: str | Path | None = None,
             device: str = "auto", batch_size: int = 16, recognizer: Recognizer | None = None) -> dict:
    """Decode every utterance of `manifest` (greedy, or the recognizer's beam search) and score it.

    Writes `utterances.jsonl` (reference, hypothesis, errors, alignment) and `summary.json`
    into `out_dir` (default: next to the checkpoint, `decode_<manifest name>/`).
    Unreadable audio is scored as an empty hypothesis and counted, never dropped.
    """
    rec = recognizer or Recognizer(checkpoint, device, batch_size)
    utts = read_manifest(manifest)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"decode_{Path(manifest).stem}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    waves, failed = load_utterances(utts, rec.sample_rate)
    ok = [i for i, w in enumerate(waves) if w is not None]
    hyps_ok = rec.transcribe([waves[i] for i in ok])
    hyps = [""] * len(utts)
    for i, h in zip(ok, hyps_ok):
        hyps[i] = h
    refs = [normalize_text(u.text) for u in utts]
    elapsed = time.time() - t0
    audio_seconds = sum(len(w) for w in waves if w is not None) / rec.sample_rate

    result = score(refs, hyps)
    result.update({**rec.decoder_settings, "manifest": str(manifest), "model": str(checkpoint),
                   "failed_utterances": len(failed), "audio_seconds": audio_seconds,
                   "real_time_factor": elapsed / max(audio_seconds, 1e-9)})
    with atomic_write(out / "utterances.jsonl") as f:
        for u, ref, hyp in zip(utts, refs, hyps):
            w = word_errors([ref], [hyp])
            row = {"id": u.id, "reference": ref, "hypothesis": hyp,
                   "errors": {"substitutions": w.substitutions, "deletions": w.deletions,
                              "insertions": w.insertions, "reference_words": w.reference_length},
                   "alignment": alignment(ref, hyp)}
            if u.id in failed:
                row["error"] = failed[u.id]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_text_atomic(out / "summary.json", json.dumps(result, indent=2))
    for utt_id, reason in failed.items():
        log.warning(f"unreadable audio scored as empty hypothesis: {utt_id}: {reason}")
    return result


def format_result(result: dict) -> str:
    """Human-readable summary of one `evaluate` result."""
    w, c = result["word_errors"], result["char_errors"]
    lines = [
        f"{result['manifest']}: {result['utterances']} utterances, {result['words']} words ({result['decoder']})",
        f"  WER {100 * result['wer']:6.2f}%  (sub {w['substitutions']}, del {w['deletions']}, ins {w['insertions']})",
        f"  CER {100 * result['cer']:6.2f}%  (sub {c['substitutions']}, del {c['deletions']}, ins {c['insertions']})",
    ]
    if result.get("failed_utterances"):
        lines.append(f"  {result['failed_utterances']} utterance(s) had unreadable audio (scored as empty)")
    return "\n".join(lines)
