"""`asr serve`: a transcription server with OpenAI's audio API (`POST /v1/audio/transcriptions`).

    asr serve --model exp/synthetic_en/best.pt [--lm LM] [--host 127.0.0.1] [--port 8000] [--api-key-file F]

FastAPI on uvicorn. Requests from many clients are batched on the model: a worker thread takes the first waiting
request, waits up to `batch_wait_ms` for more, and runs all their pieces through the model at once; decoding (the
beam search with the LM) runs in its own thread, outside the event loop. A bounded number of requests may wait
(503 with Retry-After beyond it); uploads and audio length are limited (413); a request that takes too long gets a
504, and one whose client hung up is dropped before the model sees it. Errors use OpenAI's error shape. With API
keys (from a file or ASR_API_KEYS), every /v1 route needs `Authorization: Bearer <key>`, compared in constant time.
Uploads are decoded in memory (libsndfile, or ffmpeg through a pipe): nothing is written to disk.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import os
import queue
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect  # asr[serve]; FastAPI resolves the
# handlers' annotations from this module's names
from fastapi.responses import JSONResponse, PlainTextResponse

from .audio import AudioError, checked, is_silent, read_audio_bytes
from .decoding import CTCBeamDecoder, DecodingOptions
from .formats import FORMATS, render, verbose
from .inference import DecodeRequest, Recognizer
from .streaming import StreamingError, check_streamable
from .text import normalize_text
from .transcribe import DEFAULT_MAX_SEGMENT_SECONDS, assemble, speech_spans

log = logging.getLogger("asr.server")

BEAM_RANGE, ALPHA_RANGE, BETA_RANGE, HOTWORD_WEIGHT_RANGE = (1, 512), (0.0, 5.0), (-10.0, 10.0), (0.0, 50.0)


@dataclass(frozen=True)
class ServeSettings:
    """Everything `asr serve` takes; validated by `create_app`."""
    model: str
    lm: str | None = None
    device: str = "auto"
    int8: bool = False
    model_name: str = "asr-ds2"  # the id /v1/models lists and `model` may name
    language: str = "en"
    api_keys: frozenset[str] = field(default_factory=frozenset, repr=False)  # never printed
    max_upload_mb: float = 25.0  # OpenAI's own limit
    max_audio_seconds: float = 3600.0
    max_queue: int = 64  # requests waiting or running; beyond it 503 + Retry-After
    max_batch: int = 16  # pieces run through the model at once
    batch_wait_ms: float = 10.0
    request_timeout_s: float = 300.0
    max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS
    cors_origins: tuple[str, ...] = ()
    endpoint_ms: float = 600.0  # silence that ends an utterance on the WebSocket stream


def read_api_keys(path: str | None, env: str = "ASR_API_KEYS") -> frozenset[str]:
    """Keys from a file (one per line, # comments) and/or the environment (comma-separated)."""
    keys = {k.strip() for k in os.environ.get(env, "").split(",") if k.strip()}
    if path:
        text = Path(path).read_text(encoding="utf-8")
        keys |= {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    return frozenset(keys)


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class _Job:
    waves: list[np.ndarray]
    future: concurrent.futures.Future
    cancelled: bool = False


class Engine:
    """The loaded model and LM, the batching worker thread and the decoding thread."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.recognizer: Recognizer | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.decode_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asr-decode")
        self._decoders: dict[tuple, CTCBeamDecoder] = {}
        self.batches = 0
        self.batched_requests = 0

    def start(self) -> None:
        threading.Thread(target=self._load_and_run, name="asr-model", daemon=True).start()

    def stop(self) -> None:
        self.jobs.put(None)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    def _load_and_run(self) -> None:
        s = self.settings
        try:
            self.recognizer = Recognizer(s.model, s.device, s.max_batch, DecodeRequest(lm=s.lm), int8=s.int8)
            if self.recognizer.config.features.kind == "image":
                raise ValueError(f"{s.model} reads text-line images (features.kind=image); the server takes audio "
                                 "(use asr transcribe for images)")
        except Exception as e:  # reported by /health/ready and every request
            self.load_error = f"{type(e).__name__}: {e}"
            log.error(f"could not load the model: {self.load_error}")
            return
        self.ready.set()
        log.info(f"ready: {s.model} ({self.recognizer.decoder_name}"
                 f"{', int8' if s.int8 else ''}) on {self.recognizer.device}")
        self._run()

    def _run(self) -> None:
        """Batching loop: the first waiting job, then whatever else arrives within batch_wait_ms."""
        wait = self.settings.batch_wait_ms / 1000
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch, deadline = [job], time.monotonic() + wait
            while sum(len(j.waves) for j in batch) < self.settings.max_batch:
                try:
                    nxt = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                batch.append(nxt)
            batch = [j for j in batch if not j.cancelled and j.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                lps = self.recognizer.log_probs([w for j in batch for w in j.waves])
            except Exception as e:  # pragma: no cover - a model failure reaches every waiting client
                for j in batch:
                    j.future.set_exception(e)
                continue
            self.batches += 1
            self.batched_requests += len(batch)
            start = 0
            for j in batch:
                j.future.set_result(lps[start: start + len(j.waves)])
                start += len(j.waves)

    def log_probs(self, waves: list[np.ndarray]) -> tuple[concurrent.futures.Future, _Job]:
        job = _Job(waves, concurrent.futures.Future())
        if not waves:
            job.future.set_result([])
        else:
            self.jobs.put(job)
        return job.future, job

    def decoder(self, beam: int | None, alpha: float | None, beta: float | None, hotwords: tuple[str, ...],
                hotword_weight: float | None) -> CTCBeamDecoder:
        """The recognizer's decoder with a request's options (cached; the LM is loaded once)."""
        rec = self.recognizer
        key = (beam, alpha, beta, hotwords, hotword_weight)
        dec = self._decoders.get(key)
        if dec is None:
            base = rec.beam_decoder
            if base is None:
                width = beam or (DecodingOptions.beam_width if hotwords else 1)
                base = CTCBeamDecoder(rec.vocab.labels, rec.vocab.blank, beam_width=width, frame_seconds=rec.frame_seconds)
            dec = base.with_options(beam_width=beam, alpha=alpha, beta=beta, hotwords=hotwords or None,
                                    hotword_weight=hotword_weight)
            if len(self._decoders) >= 32:
                self._decoders.pop(next(iter(self._decoders)))
            self._decoders[key] = dec
        return dec


@dataclass(frozen=True)
class _Request:
    """A transcription request's validated fields."""
    response_format: str
    words: bool
    beam: int | None
    alpha: float | None
    beta: float | None
    hotwords: tuple[str, ...]
    hotword_weight: float | None


def _number(value, name: str, kind, bounds: tuple) -> float | int | None:
    if value in (None, ""):
        return None
    try:
        x = kind(value)
    except (TypeError, ValueError):
        raise APIError(400, f"'{name}' must be a {kind.__name__}, got {value!r}", param=name) from None
    if not bounds[0] <= x <= bounds[1]:
        raise APIError(400, f"'{name}' must be in [{bounds[0]}, {bounds[1]}], got {x}", param=name)
    return x


def parse_request(settings: ServeSettings, form) -> _Request:
    """Check a multipart form's fields as OpenAI's API defines them, plus ours (beam, alpha, beta, hotwords)."""
    fmt = form.get("response_format") or "json"
    if fmt not in FORMATS:
        raise APIError(400, f"'response_format' must be one of {', '.join(FORMATS)}, got {fmt!r}",
                       param="response_format")
    model = form.get("model")
    if model and model not in (settings.model_name, "whisper-1"):
        raise APIError(404, f"the model {model!r} does not exist; this server has {settings.model_name!r}",
                       param="model", code="model_not_found")
    language = form.get("language")
    if language and language.split("-")[0].lower() != settings.language:
        raise APIError(400, f"'language' {language!r} is not this model's ({settings.language!r})", param="language")
    _number(form.get("temperature"), "temperature", float, (0.0, 1.0))  # accepted, as OpenAI's, and not used
    granularities = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    unknown = granularities - {"word", "segment"}
    if unknown:
        raise APIError(400, f"'timestamp_granularities[]' may hold word and segment, got {sorted(unknown)}",
                       param="timestamp_granularities[]")
    hot = []
    for item in (form.get("hotwords") or "").split(","):  # "word", "a phrase" or "word:bonus"
        phrase, sep, bonus = item.rpartition(":")
        phrase, bonus = (phrase, bonus) if sep else (item, "")
        if normalize_text(phrase):
            _number(bonus, "hotwords", float, HOTWORD_WEIGHT_RANGE)
            hot.append(normalize_text(phrase) + (f":{bonus.strip()}" if bonus.strip() else ""))
    hot += normalize_text(form.get("prompt") or "").split()  # a prompt's words are taken as hotwords
    return _Request(fmt, "word" in granularities,
                    _number(form.get("beam"), "beam", int, BEAM_RANGE),
                    _number(form.get("alpha"), "alpha", float, ALPHA_RANGE),
                    _number(form.get("beta"), "beta", float, BETA_RANGE),
                    tuple(sorted({h for h in hot if h})),
                    _number(form.get("hotword_weight"), "hotword_weight", float, HOTWORD_WEIGHT_RANGE))


async def _wait_or_disconnect(request: Request, fut: asyncio.Future, job: _Job):
    """The future's result; if the client hangs up first, the job is cancelled before the model runs it."""
    while True:
        done, _ = await asyncio.wait({fut}, timeout=0.1)
        if done:
            return fut.result()
        if await request.is_disconnected():
            job.cancelled = True
            fut.cancel()
            raise asyncio.CancelledError


class _Service:
    """What the routes do, sharing the settings, the engine, the upload limit and the count of requests in
    progress; `create_app` binds them to paths."""

    def __init__(self, settings: ServeSettings, engine: Engine):
        self.settings, self.engine = settings, engine
        self.limit = int(settings.max_upload_mb * 2**20)
        self.inflight = 0

    def check_key(self, header: str) -> None:
        """401 unless `header` is "Bearer <one of the keys>"; every key is compared, each in constant time."""
        if not self.settings.api_keys:
            return
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        ok = False
        for key in self.settings.api_keys:
            ok |= hmac.compare_digest(token.encode(), key.encode())
        if not ok:
            raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)", "invalid_request_error",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def recognizer(self) -> Recognizer:
        """The loaded recognizer: 500 if it failed to load, 503 while it loads."""
        engine = self.engine
        if engine.load_error:
            raise APIError(500, f"the model could not be loaded: {engine.load_error}", "server_error")
        if not engine.ready.is_set():
            raise APIError(503, "the model is still loading", "server_error", code="not_ready",
                           headers={"Retry-After": "2"})
        return engine.recognizer

    async def read_upload(self, request: Request) -> tuple[bytes, dict]:
        """The 'file' part's bytes and the form; 413 past the upload limit, 400 without a file."""
        size = request.headers.get("content-length")
        too_large = APIError(413, f"upload larger than the server's limit of {self.settings.max_upload_mb:g} MB",
                             code="file_too_large")
        if size and size.isdigit() and int(size) > self.limit + 65536:
            raise too_large
        form = await request.form(max_part_size=self.limit + 1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "a 'file' part with the audio is required", param="file")
        data = await upload.read(self.limit + 1)
        if len(data) > self.limit:
            raise too_large
        return data, {"form": form, "filename": upload.filename or "upload"}

    @staticmethod
    def decode_audio(data: bytes, filename: str, rate: int) -> np.ndarray:
        try:  # in memory: an upload is never written to disk, under its name or any other
            return checked(*read_audio_bytes(data, filename), rate, filename)
        except AudioError as e:
            raise APIError(400, str(e), param="file", code="invalid_audio") from None

    def finish(self, rec: Recognizer, req: _Request, spans, heard, lps) -> dict:
        """Beam search of a request's log-probs with its own options, assembled into one transcript row."""
        dec = self.engine.decoder(req.beam, req.alpha, req.beta, req.hotwords, req.hotword_weight)
        hyps = [h[0] for h in dec.nbest_many([lp.numpy() for lp in lps], 1, processes=1)]
        return assemble(spans, heard, [h.text for h in hyps], rec.sample_rate, hyps, lps, rec.calibration)

    async def transcribe(self, request: Request, rec: Recognizer) -> tuple[dict, _Request]:
        """One upload through the batching model thread and the decoder pool, within the request timeout."""
        settings, engine = self.settings, self.engine
        data, meta = await self.read_upload(request)
        req = parse_request(settings, meta["form"])
        loop = asyncio.get_running_loop()
        wave = await loop.run_in_executor(None, self.decode_audio, data, meta["filename"], rec.sample_rate)
        seconds = len(wave) / rec.sample_rate
        if seconds > settings.max_audio_seconds:
            raise APIError(413, f"{meta['filename']}: {seconds:.1f} s of audio, more than the server's limit of "
                                f"{settings.max_audio_seconds:g} s", param="file", code="audio_too_long")
        spans, heard = speech_spans(wave, rec.sample_rate, settings.max_segment_seconds)
        cfut, job = engine.log_probs([wave[spans[i][0]: spans[i][1]] for i in heard])

        async def run():
            lps = await _wait_or_disconnect(request, asyncio.wrap_future(cfut), job)
            return await loop.run_in_executor(engine.decode_pool, self.finish, rec, req, spans, heard, lps)
        try:
            row = await asyncio.wait_for(run(), settings.request_timeout_s)
        except asyncio.TimeoutError:
            job.cancelled = True
            raise APIError(504, f"transcription took longer than {settings.request_timeout_s:g} s",
                           "server_error", code="timeout") from None
        row["duration"] = round(seconds, 3)
        return row, req

    async def transcriptions(self, request: Request):
        """POST /v1/audio/transcriptions: 503 when `max_queue` requests are in progress; the body in the
        requested response_format."""
        settings = self.settings
        self.check_key(request.headers.get("authorization", ""))
        rec = self.recognizer()
        if self.inflight >= settings.max_queue:
            raise APIError(503, f"the server is busy ({settings.max_queue} requests in progress); retry shortly",
                           "server_error", code="overloaded", headers={"Retry-After": "1"})
        self.inflight += 1
        t0 = time.perf_counter()
        try:
            row, req = await self.transcribe(request, rec)
            log.info(f"transcribed {row['duration']:.1f} s in {time.perf_counter() - t0:.3f} s "
                     f"({req.response_format})")
        finally:
            self.inflight -= 1
        if not req.words:
            row.pop("words", None)
        if req.response_format in ("json", "verbose_json"):
            body = {"text": row["text"]} if req.response_format == "json" else verbose(row, settings.language)
            return JSONResponse(body)
        media = {"srt": "application/x-subrip", "vtt": "text/vtt"}.get(req.response_format, "text/plain")
        return PlainTextResponse(render(row, req.response_format, settings.language), media_type=media)

    async def stream(self, ws: WebSocket) -> None:
        """Live audio for unidirectional models: binary messages of mono PCM at the model's rate (16-bit little-
        endian, or float32 after {"type": "config", "format": "f32le"}); JSON partial results as the text changes,
        and a final one after `endpoint_ms` of silence (then the next utterance starts) or {"type": "end"}."""
        await ws.accept()
        try:
            self.check_key(ws.headers.get("authorization", "") or f"Bearer {ws.query_params.get('api_key', '')}")
            rec = self.recognizer()
            check_streamable(rec.model)
        except (APIError, StreamingError) as e:
            err = e if isinstance(e, APIError) else APIError(400, str(e), code="not_streamable")
            body = err.body()["error"]
            await ws.send_json({"type": "error", "message": body["message"], "code": body["code"],
                                "error_type": body["type"]})
            await ws.close(code=1008 if err.status == 401 else 1003)
            return
        session = _StreamSession(rec, self.settings.endpoint_ms)
        try:
            while await self._stream_message(ws, session):
                pass
        except WebSocketDisconnect:
            return

    async def _stream_message(self, ws: WebSocket, session: "_StreamSession") -> bool:
        """Answer one message of a stream; False when the stream has ended."""
        pool = self.engine.decode_pool
        loop = asyncio.get_running_loop()
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return False
        if msg.get("text") is None:
            for event in await loop.run_in_executor(pool, session.feed, msg.get("bytes") or b""):
                await ws.send_json(event)
            return True
        try:
            control = json.loads(msg["text"])
            session.control(control)
        except (ValueError, TypeError, KeyError) as e:
            await ws.send_json({"type": "error", "message": f"bad control message: {e}", "param": None,
                                "code": "bad_message"})
            return True
        if control.get("type") == "end":
            for event in await loop.run_in_executor(pool, session.end):
                await ws.send_json(event)
            await ws.close()
            return False
        return True


def create_app(settings: ServeSettings, engine: Engine | None = None):
    """The FastAPI application; the model loads in the background once the server starts."""
    engine = engine or Engine(settings)
    service = _Service(settings, engine)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="asr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready():
        if engine.load_error or not engine.ready.is_set():
            return JSONResponse({"ready": False, "error": engine.load_error}, status_code=503)
        return {"ready": True, "model": settings.model_name, "decoder": engine.recognizer.decoder_name,
                "requests": engine.batched_requests, "batches": engine.batches}

    @app.get("/v1/models")
    async def models(request: Request):
        service.check_key(request.headers.get("authorization", ""))
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "asr"}]}

    app.post("/v1/audio/transcriptions")(service.transcriptions)
    app.websocket("/v1/audio/stream")(service.stream)
    return app


class _StreamSession:
    """One WebSocket's utterances: a Stream per utterance, energy endpointing between them."""

    def __init__(self, rec: Recognizer, endpoint_ms: float):
        self.rec, self.stream = rec, rec.stream()
        self.format, self.endpoint_s = "s16le", endpoint_ms / 1000
        self.silent_s, self.heard, self.offset, self.last_text = 0.0, False, 0.0, ""
        self.rest = b""

    def control(self, msg: dict) -> None:
        if msg.get("type") == "config":
            fmt = msg.get("format", self.format)
            if fmt not in ("s16le", "f32le"):
                raise ValueError(f"format must be s16le or f32le, got {fmt!r}")
            rate = int(msg.get("sample_rate", self.rec.sample_rate))
            if rate != self.rec.sample_rate:
                raise ValueError(f"sample_rate must be the model's {self.rec.sample_rate}, got {rate}")
            self.format = fmt
            self.endpoint_s = float(msg.get("endpoint_ms", self.endpoint_s * 1000)) / 1000
        elif msg.get("type") != "end":
            raise ValueError(f"unknown message type {msg.get('type')!r}")

    def feed(self, data: bytes) -> list[dict]:
        width = 2 if self.format == "s16le" else 4
        data = self.rest + data  # a message may end inside a sample: its bytes wait for the next one
        cut = len(data) // width * width
        self.rest = data[cut:]
        samples = np.frombuffer(data[:cut], dtype="<i2" if width == 2 else "<f4")
        if not len(samples):
            return []
        samples = samples.astype(np.float32) / (32768.0 if width == 2 else 1.0)
        loud = not is_silent(samples, -45.0)
        self.heard |= loud
        self.silent_s = 0.0 if loud else self.silent_s + len(samples) / self.rec.sample_rate
        self.stream.accept(samples)
        events = []
        if self.stream.text != self.last_text:
            self.last_text = self.stream.text
            events.append({"type": "partial", "text": self.last_text,
                           "audio_seconds": round(self.offset + self.stream.seconds, 3)})
        if self.heard and self.silent_s >= self.endpoint_s:
            events += self.end(restart=True)
        return events

    def end(self, restart: bool = False) -> list[dict]:
        """Finish the utterance: its final result (then a new stream when `restart`)."""
        self.stream.finish()
        start, end = self.offset, self.offset + self.stream.seconds
        events = [{"type": "final", "text": self.stream.text, "start": round(start, 3), "end": round(end, 3)}]
        if restart:
            self.offset, self.stream = end, self.rec.stream()
            self.silent_s, self.heard, self.last_text = 0.0, False, ""
        return events


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server until interrupted."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        log.warning(f"serving on {host} without API keys: anyone who can reach the port can use it")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
