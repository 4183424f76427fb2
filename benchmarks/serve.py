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
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--limit", type=int, default=64, help="files of the manifest to send (its first N)")
    ap.add_argument("--server-arg", action="append", default=[], help="passed to asr serve, e.g. --server-arg=--int8")
    args = ap.parse_args()

    utts = read_manifest(args.manifest)[: args.limit]
    paths = [u.audio_filepath for u in utts]
    rec = Recognizer(args.model, "cpu")
    offline = transcribe_files(rec, paths)  # what `asr transcribe` says of each file: the answers to expect
    waves = [load_audio(p, rec.sample_rate) for p in paths]
    t0 = time.perf_counter()
    rec.transcribe(waves)  # offline batch transcription of the same audio, batches of 16 (warm: after the above)
    offline_s = time.perf_counter() - t0
    audio = {p: r["duration"] for p, r in zip(paths, offline)}
    expected = {p: r["text"] for p, r in zip(paths, offline)}
    print(f"{len(paths)} files, {sum(audio.values()) / 60:.1f} min of audio; decoder {rec.decoder_name}")
    print(f"offline batch transcription: {sum(audio.values()) / offline_s:.1f} audio-s/s")
    del rec

    port = free_port()
    server = start_server(args.model, port, args.server_arg)
    url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
    blobs = {p: Path(p).read_bytes() for p in paths}
    lock, latencies, wrong, failed, done_audio = threading.Lock(), [], [], [], [0.0]
    stop_at = time.perf_counter() + args.seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as http:
            i = k
            while time.perf_counter() < stop_at:
                p = paths[i % len(paths)]
                i += args.clients
                t = time.perf_counter()
                try:
                    r = http.post(url, files={"file": (Path(p).name, blobs[p])}, data={"response_format": "json"})
                except httpx.HTTPError as e:
                    with lock:
                        failed.append(f"{p}: {e}")
                    continue
                with lock:
                    if r.status_code != 200:
                        failed.append(f"{p}: HTTP {r.status_code} {r.text[:200]}")
                    elif r.json()["text"] != expected[p]:
                        wrong.append(p)
                    else:
                        latencies.append(time.perf_counter() - t)
                        done_audio[0] += audio[p]

    t0 = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        wall = time.perf_counter() - t0
        stats = httpx.get(f"http://127.0.0.1:{port}/health/ready").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    lat = sorted(latencies)
    print(f"\n{args.clients} clients for {wall:.0f} s: {len(lat)} correct answers, {len(wrong)} wrong, "
          f"{len(failed)} failed")
    if lat:
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"latency p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s; throughput "
              f"{done_audio[0] / wall:.1f} audio-s/s served vs {sum(audio.values()) / offline_s:.1f} offline "
              f"({done_audio[0] / wall / (sum(audio.values()) / offline_s):.2f}x); "
              f"{stats['requests']} requests in {stats['batches']} model batches")
    for line in (failed + wrong)[:5]:
        print("  ", line)


if __name__ == "__main__":
    main()
