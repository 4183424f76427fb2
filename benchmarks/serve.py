"""`asr serve` under load: many concurrent clients against offline batch transcription of the same files.

    python benchmarks/serve.py --model exp/synthetic_en/best.pt --manifest data/synthetic_en/manifests/test.jsonl \
        [--clients 32] [--seconds 60] [--limit 64]

Starts a real server on 127.0.0.1 (a subprocess, as users run it), then `--clients` threads each post files of the
manifest in turn for `--seconds`; every answer is checked against `asr transcribe`'s transcript of the same file
(computed first, offline, in this process, with the same decoder). Prints p50/p99 latency, throughput in audio
seconds per second, requests that failed or came back wrong (there should be none), and the throughput of offline
batch transcription (`Recognizer.transcribe`, batches of 16) of the same files for comparison.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from asr.audio import load_audio  # noqa: E402
from asr.inference import Recognizer  # noqa: E402
from asr.manifest import read_manifest  # noqa: E402
from asr.transcribe import transcribe_files  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "asr", "serve", "--model", model, "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited while starting")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not become ready in 120 s")


@dataclass
class Load:
    """What the clients saw: latencies of correct answers, wrong and failed requests, audio seconds served."""
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall: float = 0.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--limit", type=int, default=64, help="files of the manifest to send (its first N)")
    ap.add_argument("--server-arg", action="append", default=[], help="passed to asr serve, e.g. --server-arg=--int8")
    return ap.parse_args()


def offline(model: str, paths: list[str]) -> tuple[list[dict], float]:
    """What `asr transcribe` says of each file (the answers to expect) and offline batch transcription's
    throughput of the same audio in audio-s/s (batches of 16, warm: after the first pass)."""
    rec = Recognizer(model, "cpu")
    answers = transcribe_files(rec, paths)
    waves = [load_audio(p, rec.sample_rate) for p in paths]
    t0 = time.perf_counter()
    rec.transcribe(waves)
    elapsed, audio = time.perf_counter() - t0, sum(r["duration"] for r in answers)
    print(f"{len(paths)} files, {audio / 60:.1f} min of audio; decoder {rec.decoder_name}")
    print(f"offline batch transcription: {audio / elapsed:.1f} audio-s/s")
    return answers, audio / elapsed


def put_under_load(url: str, paths: list[str], answers: list[dict], clients: int, seconds: float) -> Load:
    """`clients` threads, each posting the files in turn (client k: files k, k + clients, ...) for `seconds`."""
    expected = {p: r["text"] for p, r in zip(paths, answers)}
    audio = {p: r["duration"] for p, r in zip(paths, answers)}
    blobs = {p: Path(p).read_bytes() for p in paths}
    lock, load = threading.Lock(), Load()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as http:
            for i in itertools.count(k, clients):
                if time.perf_counter() >= stop_at:
                    return
                p = paths[i % len(paths)]
                t = time.perf_counter()
                try:
                    r = http.post(url, files={"file": (Path(p).name, blobs[p])}, data={"response_format": "json"})
                except httpx.HTTPError as e:
                    with lock:
                        load.failed.append(f"{p}: {e}")
                    continue
                with lock:
                    if r.status_code != 200:
                        load.failed.append(f"{p}: HTTP {r.status_code} {r.text[:200]}")
                    elif r.json()["text"] != expected[p]:
                        load.wrong.append(p)
                    else:
                        load.latencies.append(time.perf_counter() - t)
                        load.audio_seconds += audio[p]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    load.wall = time.perf_counter() - t0
    return load


def report(load: Load, clients: int, offline_rate: float, stats: dict) -> None:
    lat = sorted(load.latencies)
    print(f"\n{clients} clients for {load.wall:.0f} s: {len(lat)} correct answers, {len(load.wrong)} wrong, "
          f"{len(load.failed)} failed")
    if lat:
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        served = load.audio_seconds / load.wall
        print(f"latency p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s; throughput "
              f"{served:.1f} audio-s/s served vs {offline_rate:.1f} offline ({served / offline_rate:.2f}x); "
              f"{stats['requests']} requests in {stats['batches']} model batches")
    for line in (load.failed + load.wrong)[:5]:
        print("  ", line)


def main() -> None:
    args = parse_args()
    paths = [u.audio_filepath for u in read_manifest(args.manifest)[: args.limit]]
    answers, offline_rate = offline(args.model, paths)
    port = free_port()
    server = start_server(args.model, port, args.server_arg)
    try:
        load = put_under_load(f"http://127.0.0.1:{port}/v1/audio/transcriptions", paths, answers, args.clients,
                              args.seconds)
        stats = httpx.get(f"http://127.0.0.1:{port}/health/ready").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    report(load, args.clients, offline_rate, stats)


if __name__ == "__main__":
    main()
