"""`asr serve` as users run it: a real server process on 127.0.0.1, the official openai client, httpx."""
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, run_cli

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
KEY = "sk-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model, *extra, log=None):
    """A real `asr serve` process on a free port of 127.0.0.1, once it says it is ready: (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "asr", "serve", "--model", str(model), "--port", str(port), *extra],
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the server did not become ready" + (": " + open(log.name).read()[-3000:] if log else ""))


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    model = trained[0] / "best.pt"
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# one key per line\n{KEY}\n")
    log = (tmp_path_factory.mktemp("log") / "server.log").open("w")
    proc, url = start(model, "--api-key-file", str(keys), "--max-upload-mb", "1", "--max-audio-seconds", "30",
                      "--batch-wait-ms", "30", log=log)
    yield url, model
    proc.terminate()
    proc.wait(timeout=30)
    assert KEY not in open(log.name).read()  # keys are never logged


def wavs(corpus, n=4):
    return sorted((corpus["root"] / "audio" / "dev").rglob("*.flac"))[:n]


def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def test_openai_client_every_response_format_matches_asr_transcribe(server, corpus):
    url, model = server
    wav = wavs(corpus)[0]
    proc = run_cli("transcribe", "--model", str(model), str(wav), "--format", "json", "--word-timestamps")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = json.loads(proc.stdout.splitlines()[0])
    c = client(url)
    with open(wav, "rb") as f:
        got = c.audio.transcriptions.create(model="asr-ds2", file=f)
    assert got.text == expected["text"]
    with open(wav, "rb") as f:
        text = c.audio.transcriptions.create(model="asr-ds2", file=f, response_format="text")
    assert text.strip() == expected["text"]
    with open(wav, "rb") as f:
        v = c.audio.transcriptions.create(model="asr-ds2", file=f, response_format="verbose_json",
                                          timestamp_granularities=["word", "segment"])
    assert v.text == expected["text"] and v.language == "en" and v.duration == pytest.approx(expected["duration"], abs=1e-3)
    assert [w.word for w in v.words] == [w["word"] for w in expected["words"]]
    assert all(0 <= w.start <= w.end <= v.duration + 0.05 and 0 <= w.model_extra["confidence"] <= 1 for w in v.words)
    assert [s.text for s in v.segments] == [s["text"] for s in expected["segments"] if s["text"]]
    for fmt, head in (("srt", "1\n00:00:00,000 --> "), ("vtt", "WEBVTT\n\n00:00:00.000 --> ")):
        with open(wav, "rb") as f:
            doc = c.audio.transcriptions.create(model="asr-ds2", file=f, response_format=fmt)
        assert doc.startswith(head) and expected["text"] in doc, doc
        local = run_cli("transcribe", "--model", str(model), str(wav), "--format", fmt)
        assert local.returncode == 0 and local.stdout == doc, (local.stdout, doc)


def test_models_health_and_api_keys(server, corpus):
    url, _ = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert [m.id for m in client(url).models.list()] == ["asr-ds2"]
    with open(wavs(corpus)[0], "rb") as f:
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": f})
    assert r.status_code == 401


def post(url, data=None, files=None, **fields):
    return httpx.post(f"{url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                      data=fields, files=files, timeout=60)


def test_bad_requests_get_clear_openai_errors(server, corpus, tmp_path):
    url, _ = server
    wav = wavs(corpus)[0].read_bytes()
    cases = [
        (dict(response_format="docx"), 400, "response_format"),
        (dict(language="de"), 400, "language"),
        (dict(model="gpt-4o"), 404, "model"),
        (dict(alpha="9"), 400, "alpha"),
        (dict(beam="0"), 400, "beam"),
        (dict(temperature="hot"), 400, "temperature"),
    ]
    for fields, status, param in cases:
        r = post(url, files={"file": ("a.flac", wav)}, **fields)
        assert r.status_code == status and r.json()["error"]["param"] == param, (fields, r.text)
    r = post(url, files={"file": ("notes.wav", b"this is not audio")})
    assert r.status_code == 400 and "notes.wav" in r.json()["error"]["message"], r.text
    r = post(url, model="asr-ds2")
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = post(url, files={"file": ("big.wav", b"\0" * (1024 * 1024 + 10))})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    long = tmp_path / "long.wav"
    sf.write(str(long), (0.01 * np.random.default_rng(0).standard_normal(8000 * 31)).astype(np.float32), 8000,
             subtype="PCM_U8")
    r = post(url, files={"file": ("long.wav", long.read_bytes())})
    assert r.status_code == 413 and "long.wav" in r.json()["error"]["message"], r.text


def test_hotwords_beam_and_lm_options_match_asr_transcribe(server, corpus):
    url, model = server
    wav = wavs(corpus)[1]
    local = run_cli("transcribe", "--model", str(model), str(wav), "--format", "json", "--hotwords", "market,city",
                    "--beam", "16")
    assert local.returncode == 0, local.stderr[-2000:]
    r = post(url, files={"file": ("x.flac", wav.read_bytes())}, hotwords="market,city", beam="16")
    assert r.status_code == 200 and r.json()["text"] == json.loads(local.stdout)["text"]
    r = post(url, files={"file": ("x.flac", wav.read_bytes())}, prompt="the market in the city", beam="16")
    assert r.status_code == 200


def test_32_concurrent_clients_all_answered_correctly_and_batched(server, corpus):
    url, model = server
    files = wavs(corpus, 6)
    proc = run_cli("transcribe", "--model", str(model), *map(str, files), "--format", "json")
    expected = [json.loads(line)["text"] for line in proc.stdout.splitlines()]
    before = httpx.get(f"{url}/health/ready").json()
    jobs = [i % len(files) for i in range(32)]

    def one(i):
        r = post(url, files={"file": (files[i].name, files[i].read_bytes())})
        return i, r.status_code, r.json().get("text")
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        out = list(pool.map(one, jobs))
    assert all(code == 200 for _, code, _ in out), out
    assert [text for _, _, text in out] == [expected[i] for i in jobs]
    after = httpx.get(f"{url}/health/ready").json()
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 32 and batches < requests  # requests shared model passes


@pytest.fixture(scope="module")
def streaming_server(streaming_model):
    proc, url = start(streaming_model / "best.pt")
    yield url, streaming_model / "best.pt"
    proc.terminate()
    proc.wait(timeout=30)


def pcm16(path) -> bytes:
    from asr.audio import load_audio

    return (np.clip(load_audio(path, 16000), -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def test_websocket_stream_partials_endpointing_and_the_cli_s_text(streaming_server, corpus):
    from websockets.sync.client import connect

    url, model = streaming_server
    ws_url = url.replace("http://", "ws://") + "/v1/audio/stream"
    files = wavs(corpus, 2)
    local = run_cli("transcribe", "--model", str(model), str(files[0]), "--format", "json", "--stream-chunk-ms", "100")
    assert local.returncode == 0, local.stderr[-2000:]
    expected = json.loads(local.stdout)["text"]
    chunk = 2 * 1600  # 100 ms of 16-bit samples
    with connect(ws_url) as ws:  # one utterance, ended by the client: the same text as the CLI's stream
        audio = pcm16(files[0])
        for i in range(0, len(audio), chunk):
            ws.send(audio[i: i + chunk])
        ws.send(json.dumps({"type": "end"}))
        events = [json.loads(m) for m in ws]
    partials, finals = [e for e in events if e["type"] == "partial"], [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"] == expected and finals[0]["start"] == 0.0
    texts = [p["text"] for p in partials] + [finals[0]["text"]]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    silence = b"\0\0" * 16000  # 1 s: more than the 600 ms that end an utterance
    with connect(ws_url) as ws:  # two utterances on one connection, the first ended by the silence after it
        audio = pcm16(files[0]) + silence + pcm16(files[1])
        for i in range(0, len(audio), chunk):
            ws.send(audio[i: i + chunk])
        ws.send(json.dumps({"type": "end"}))
        finals = [e for e in map(json.loads, ws) if e["type"] == "final"]
    assert len(finals) == 2 and finals[0]["end"] == pytest.approx(finals[1]["start"])
    assert finals[0]["end"] >= len(pcm16(files[0])) / 32000 + 0.6
    with connect(ws_url) as ws:  # bad messages are answered and the stream goes on
        ws.send(json.dumps({"type": "config", "sample_rate": 8000}))
        assert "sample_rate" in json.loads(ws.recv())["message"]
        ws.send("{not json")
        assert json.loads(ws.recv())["code"] == "bad_message"
        audio = pcm16(files[0])
        ws.send(audio[:1])  # half a sample: kept for the next message
        for i in range(1, len(audio), chunk + 1):  # odd-sized messages, samples split across them
            ws.send(audio[i: i + chunk + 1])
        ws.send(json.dumps({"type": "end"}))
        finals = [e for e in map(json.loads, ws) if e["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"] == expected
    assert finals[0]["end"] == pytest.approx(len(audio) / 32000, abs=1e-3)


def test_websocket_refuses_a_bidirectional_model_and_a_missing_key(server):
    from websockets.sync.client import connect

    url, _ = server
    ws_url = url.replace("http://", "ws://") + "/v1/audio/stream"
    with connect(ws_url) as ws:
        assert json.loads(ws.recv())["code"] == "invalid_api_key"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        msg = json.loads(ws.recv())
        assert msg["type"] == "error" and "bidirectional" in msg["message"]


def test_faults_get_the_right_answer_and_the_server_keeps_serving(server, corpus, tmp_path):
    url, _ = server
    wav = wavs(corpus)[2].read_bytes()
    r = post(url, files={"file": ("empty.wav", b"")})
    assert r.status_code == 400 and "empty.wav" in r.json()["error"]["message"], r.text
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000, np.float32), 16000)
    r = post(url, files={"file": ("silent.wav", silent.read_bytes())}, response_format="verbose_json")
    assert r.status_code == 200 and r.json()["text"] == "" and r.json()["segments"] == []
    r = httpx.post(f"{url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"}, json={"file": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"  # not multipart: no file part
    # a client that hangs up mid-upload, and one that sends half a body and stalls, then goes away
    port = int(url.rsplit(":", 1)[1])
    for pause in (0.0, 1.0):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200000\r\n\r\n"
                      f"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".encode()
                      + wav[:5000])
            time.sleep(pause)
    # a WebSocket that sends garbage: told so, and the connection stays usable until it closes
    from websockets.sync.client import connect

    with connect(url.replace("http://", "ws://") + "/v1/audio/stream",
                 additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert json.loads(ws.recv())["type"] == "error"  # this model is bidirectional: refused, not crashed
    r = post(url, files={"file": ("ok.flac", wav)})
    assert r.status_code == 200 and isinstance(r.json()["text"], str)


def test_a_full_queue_answers_503_and_a_killed_server_restarts_clean(trained, corpus):
    model = trained[0] / "best.pt"
    before = sorted(p.name for p in model.parent.iterdir())
    proc, url = start(model, "--max-queue", "1", "--batch-wait-ms", "400")
    wav = wavs(corpus)[0].read_bytes()

    def one(_):
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.flac", wav)}, timeout=60)
        return r.status_code, r.headers.get("retry-after"), r.json()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        out = list(pool.map(one, range(6)))
    assert {code for code, _, _ in out} == {200, 503}, out
    assert all(after == "1" and body["error"]["code"] == "overloaded" for code, after, body in out if code == 503)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # killed under load, then started again
        futures = [pool.submit(one, i) for i in range(4)]
        time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
        for f in futures:
            try:
                f.result()
            except (httpx.HTTPError, ValueError):
                pass
    proc, url = start(model)
    try:
        assert one(0)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert sorted(p.name for p in model.parent.iterdir()) == before  # the server writes nothing beside the model


def test_a_slow_request_times_out_with_504_and_an_idle_websocket_blocks_no_one(trained, streaming_server, corpus):
    proc, url = start(trained[0] / "best.pt", "--timeout", "0.001")
    try:
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.flac", wavs(corpus)[0].read_bytes())},
                       timeout=60)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
        assert httpx.get(f"{url}/health").status_code == 200  # and the server is still up
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    from websockets.sync.client import connect

    stream_url, _ = streaming_server
    with connect(stream_url.replace("http://", "ws://") + "/v1/audio/stream"):  # connected, sends nothing
        for path in wavs(corpus, 2):
            r = httpx.post(f"{stream_url}/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                           timeout=60)
            assert r.status_code == 200
