"""Word confidence in [0, 1] from a CTC model's log-probabilities, calibrated on dev data.

The raw score of a word is the mean posterior of the best label over the frames from its first to its last
character (where the model was sure, blank or not, it is near 1). `asr calibrate` fits a logistic map from that
score to the probability that the word is right (Platt scaling on a dev set's words, aligned to the reference)
and stores it beside the model as calibration.json; its expected calibration error (ECE) before and after, and a
reliability plot, come with it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "calibration.json"


def raw_word_scores(log_probs: np.ndarray, words: list[dict]) -> list[float]:
    """Mean best-label posterior over each word's frames (`start_frame`..`end_frame` of the decoder's words)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if not len(lp):
        return [0.0 for _ in words]
    best = np.exp(lp.max(axis=1))
    out = []
    for w in words:
        s, e = max(0, int(w["start_frame"])), min(len(lp) - 1, int(w["end_frame"]))
        out.append(float(best[s: e + 1].mean()) if e >= s else float(best[min(s, len(lp) - 1)]))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class Calibration:
    """Platt scaling of raw word scores: p(correct) = sigmoid(a * logit(score) + b). Identity when a=1, b=0."""

    def __init__(self, a: float = 1.0, b: float = 0.0, report: dict | None = None):
        self.a, self.b, self.report = a, b, report or {}

    def __call__(self, scores: list[float]) -> list[float]:
        z = self.a * _logit(np.asarray(scores, dtype=np.float64)) + self.b
        return [round(float(v), 4) for v in 1 / (1 + np.exp(-z))]

    @classmethod
    def fit(cls, scores: list[float], correct: list[bool], steps: int = 500) -> "Calibration":
        """Logistic regression of correctness on logit(score), by Newton's method."""
        x, y = _logit(np.asarray(scores, dtype=np.float64)), np.asarray(correct, dtype=np.float64)
        a, b = 1.0, 0.0
        for _ in range(steps):
            p = 1 / (1 + np.exp(-(a * x + b)))
            g = np.array([np.sum((p - y) * x), np.sum(p - y)])
            w = p * (1 - p) + 1e-9
            h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-6 * np.eye(2)
            step = np.linalg.solve(h, g)
            a, b = a - step[0], b - step[1]
            if np.abs(step).max() < 1e-9:
                break
        return cls(float(a), float(b))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps({"a": self.a, "b": self.b, **self.report}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, checkpoint: str | Path) -> "Calibration":
        """The calibration stored beside `checkpoint`, or the identity when there is none."""
        path = Path(checkpoint).parent / CALIBRATION_FILE
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(float(data["a"]), float(data["b"]), {k: v for k, v in data.items() if k not in ("a", "b")})


def expected_calibration_error(confidence: list[float], correct: list[bool], bins: int = 10) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, and the bins (for a reliability plot)."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    rows, ece = [], 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        sel = (c >= lo) & ((c < hi) if k < bins - 1 else (c <= hi))
        if sel.any():
            gap = abs(c[sel].mean() - y[sel].mean())
            ece += sel.sum() / max(1, len(c)) * gap
            rows.append({"lo": lo, "hi": hi, "count": int(sel.sum()), "confidence": float(c[sel].mean()),
                         "accuracy": float(y[sel].mean())})
    return (0.0 if math.isnan(ece) else float(ece)), rows


def calibrate(checkpoint: str | Path, manifest: str | Path, device: str = "auto") -> dict:
    """Fit the word-confidence calibration of `checkpoint` on a dev manifest, with its tuned decoder, and save it
    (calibration.json and a reliability plot, calibration.png, beside the model). ECE is reported on held-out
    words: the map is fitted on the odd utterances and scored on the even ones (and the other way round); the
    saved map is fitted on all of them."""
    from .audio import load_utterances
    from .inference import Recognizer
    from .manifest import read_manifest
    from .metrics import hypothesis_word_correct

    rec = Recognizer(checkpoint, device)
    utts = read_manifest(manifest, scoring=True)
    waves, failed = load_utterances(utts, rec.sample_rate)
    ok = [i for i, w in enumerate(waves) if w is not None]
    lps = rec.log_probs([waves[i] for i in ok])
    hyps = rec.hypotheses(lps)
    per_utt = []
    for i, lp, hyp in zip(ok, lps, hyps):
        per_utt.append((raw_word_scores(lp.numpy(), hyp.words), hypothesis_word_correct(rec.vocab.normalize(utts[i].text),
                                                                                         hyp.text)))
    scores = [s for ss, _ in per_utt for s in ss]
    correct = [c for _, cc in per_utt for c in cc]
    if len(set(correct)) < 2:
        raise ValueError(f"{manifest}: calibration needs both right and wrong words; the model got "
                         f"{'all' if all(correct) else 'none'} of its {len(correct)} words right")
    held_conf, held_correct = [], []
    for fit_part in (0, 1):
        fit = [u for k, u in enumerate(per_utt) if k % 2 == fit_part]
        test = [u for k, u in enumerate(per_utt) if k % 2 != fit_part]
        cal = Calibration.fit([s for ss, _ in fit for s in ss], [c for _, cc in fit for c in cc])
        held_conf += cal([s for ss, _ in test for s in ss])
        held_correct += [c for _, cc in test for c in cc]
    ece_raw, bins_raw = expected_calibration_error(scores, correct)
    ece_cal, bins_cal = expected_calibration_error(held_conf, held_correct)
    final = Calibration.fit(scores, correct)
    final.report = {"manifest": str(manifest), "words": len(correct), "word_accuracy": float(np.mean(correct)),
                    "ece_raw": ece_raw, "ece_calibrated_held_out": ece_cal, "failed_utterances": len(failed),
                    "decoder": rec.decoder_name, "bins_raw": bins_raw, "bins_calibrated_held_out": bins_cal}
    folder = Path(checkpoint).parent
    final.save(folder)
    _reliability_plot(bins_raw, bins_cal, folder / "calibration.png")
    return {"a": final.a, "b": final.b, **final.report}


def _reliability_plot(raw: list[dict], calibrated: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfect")
    for bins, label in ((raw, "raw score"), (calibrated, "calibrated (held out)")):
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("fraction of words right")
    ax.set_title("word confidence reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
