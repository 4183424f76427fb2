"""Scoring a model on a test manifest: corpus WER/CER and a per-utterance report."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write, write_text_atomic
from .audio import load_utterances
from .inference import Recognizer
from .manifest import read_manifest
from .metrics import alignment, score, word_errors

log = logging.getLogger("asr.evaluate")


@dataclass
class ModelOutputs:
    """A manifest run through a model once: what each decoder's transcripts are scored against."""
    manifest: Path
    utterances: list
    references: list[str]
    log_probs: list  # per utterance, None where the audio could not be read
    failed: dict[str, str]  # utterance id -> why its audio could not be read
    audio_seconds: float
    seconds: float  # loading and the model's forward passes


def model_outputs(rec: Recognizer, manifest: str | Path) -> ModelOutputs:
    """Load `manifest`'s audio and run it through the recognizer's model (log-probs, not yet decoded)."""
    t0 = time.time()
    utts = read_manifest(manifest, scoring=True)
    waves, failed = load_utterances(utts, rec.sample_rate)
    ok = [i for i, w in enumerate(waves) if w is not None]
    lps: list = [None] * len(utts)
    for i, lp in zip(ok, rec.log_probs([waves[i] for i in ok])):
        lps[i] = lp
    audio_seconds = sum(len(w) for w in waves if w is not None) / rec.sample_rate
    return ModelOutputs(Path(manifest), utts, [rec.vocab.normalize(u.text) for u in utts], lps, failed, audio_seconds,
                        time.time() - t0)


def score_outputs(out: ModelOutputs, rec: Recognizer, out_dir: str | Path, checkpoint: str | Path,
                  greedy: bool = False) -> dict:
    """Decode `out` (greedily, or with the recognizer's decoder) and score it: utterances.jsonl (reference,
    hypothesis, errors, alignment) and summary.json in `out_dir`. Unreadable audio is scored as an empty hypothesis
    and counted, never dropped."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ok = [i for i, lp in enumerate(out.log_probs) if lp is not None]
    decoded = rec.greedy([out.log_probs[i] for i in ok]) if greedy else rec.decode([out.log_probs[i] for i in ok])
    hyps = [""] * len(out.utterances)
    for i, h in zip(ok, decoded):
        hyps[i] = h
    elapsed = out.seconds + time.time() - t0
    result = score(out.references, hyps)
    settings = {"decoder": "greedy", "precision": rec.decoder_settings["precision"]} if greedy else rec.decoder_settings
    result.update({**settings, "manifest": str(out.manifest), "model": str(checkpoint),
                   "failed_utterances": len(out.failed), "audio_seconds": out.audio_seconds,
                   "real_time_factor": elapsed / max(out.audio_seconds, 1e-9)})
    with atomic_write(out_dir / "utterances.jsonl") as f:
        for u, ref, hyp in zip(out.utterances, out.references, hyps):
            w = word_errors([ref], [hyp])
            row = {"id": u.id, "reference": ref, "hypothesis": hyp,
                   "errors": {"substitutions": w.substitutions, "deletions": w.deletions,
                              "insertions": w.insertions, "reference_words": w.reference_length},
                   "alignment": alignment(ref, hyp)}
            if u.id in out.failed:
                row["error"] = out.failed[u.id]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_text_atomic(out_dir / "summary.json", json.dumps(result, indent=2))
    for utt_id, reason in out.failed.items():
        log.warning(f"unreadable audio scored as empty hypothesis: {utt_id}: {reason}")
    return result


def evaluate(checkpoint: str | Path, manifest: str | Path, out_dir: str | Path | None = None,
             device: str = "auto", batch_size: int = 16, recognizer: Recognizer | None = None) -> dict:
    """Decode every utterance of `manifest` (greedy, or the recognizer's beam search) and score it.

    Writes `utterances.jsonl` and `summary.json` into `out_dir` (default: next to the checkpoint,
    `decode_<manifest name>/`).
    """
    rec = recognizer or Recognizer(checkpoint, device, batch_size)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"decode_{Path(manifest).stem}"
    return score_outputs(model_outputs(rec, manifest), rec, out, checkpoint)


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
