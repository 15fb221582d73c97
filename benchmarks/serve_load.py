"""Bounded load test of ``yollava serve`` on 127.0.0.1: N concurrent chat clients plus one training job.

    python benchmarks/serve_load.py --model tiny   --clients 4 --requests 6 --max-tokens 16
    python benchmarks/serve_load.py --model pocket --clients 3 --requests 3 --max-tokens 16 --out benchmarks/results/serve_load.md

The server runs as its own process (``python -m yollava.serve serve``) with a throw-away home; only
loopback is used. Steps: train concept <bo> through the API (alone), time single-client chats (alone),
then run the clients (each request names <bo>; every third carries a photo; half stream) while a
second concept trains. Prints a markdown report (and appends it to ``--out``). ``tiny`` is a randomly
initialised 2-layer LLaVA (hidden 64) built on the spot: it measures the server, not a model.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def photos_for(n: int, folder: Path) -> list[bytes]:
    """Real photos of <bo> from the shared data when present, else synthetic JPEGs."""
    try:
        from yollava.paths import default_data_root

        real = sorted((default_data_root() / "yollava" / "bo" / "train").glob("*.*"))[:n]
    except Exception:  # noqa: BLE001
        real = []
    if len(real) == n:
        return [p.read_bytes() for p in real]
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (200, 10 * i, 30)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def small_jpeg(blob: bytes, side: int = 320) -> bytes:
    img = Image.open(io.BytesIO(blob)).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="yollava-serve-load-"))
        self.home = self.tmp / "home"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def model_path(self) -> str:
        if self.args.model != "tiny":
            return self.args.model
        from yollava.models.tiny import build_tiny_llava

        return str(build_tiny_llava(self.tmp / "tiny-llava", init_range=0.5))

    def cli(self, *argv: str) -> str:
        out = subprocess.run([sys.executable, "-m", "yollava.serve", *argv], capture_output=True, text=True, check=True)
        return out.stdout

    def start(self, model: str) -> float:
        a = self.args
        cmd = [sys.executable, "-m", "yollava.serve", "serve", "--model", model, "--home", str(self.home), "--port", str(self.port),
               "--epochs", str(a.epochs), "--k", str(a.k), "--no-conversations", "--n-easy", "0", "--no-hard-negatives",
               "--max-concurrent", str(max(a.clients, 1)), "--log-level", "warning"] + (["--threads", str(a.threads)] if a.threads else [])
        self.log = open(self.tmp / "server.log", "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + a.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}); log: {self.tmp / 'server.log'}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit("server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- requests ----------------------------------------------------------------------------
    def train(self, headers, name: str, photos: list[bytes]) -> str:
        files = [("photos", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(photos)]
        r = httpx.post(self.url + "/v1/concepts", headers=headers, data={"name": name}, files=files, timeout=120)
        r.raise_for_status()
        return r.json()["id"]

    def wait_job(self, headers, job_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=headers, timeout=60).json()
            if j["status"] not in ("queued", "running"):
                return j
            time.sleep(0.25)
        raise SystemExit(f"job {job_id} did not finish in {timeout}s")

    def chat(self, headers, i: int, photo_url: str) -> dict:
        a = self.args
        prompt = ["What is <bo>?", "Describe <bo> in one sentence.", "Is <bo> in this photo?"][i % 3]
        content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": photo_url}}] if i % 3 == 2 else prompt
        body = {"model": "bench", "messages": [{"role": "user", "content": content}], "max_tokens": a.max_tokens, "temperature": 0}
        stream = i % 2 == 1
        t0 = time.perf_counter()
        ttft = None
        try:
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
                tokens = 0
                with httpx.stream("POST", self.url + "/v1/chat/completions", headers=headers, json=body, timeout=a.request_timeout) as r:
                    if r.status_code != 200:
                        r.read()
                        return {"ok": False, "error": f"HTTP {r.status_code}: {r.text[:200]}", "latency": time.perf_counter() - t0}
                    for line in r.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        obj = json.loads(line[6:])
                        if "error" in obj:
                            return {"ok": False, "error": obj["error"]["message"], "latency": time.perf_counter() - t0}
                        if ttft is None and any(c["delta"].get("content") for c in obj.get("choices", [])):
                            ttft = time.perf_counter() - t0
                        if obj.get("usage"):
                            tokens = obj["usage"]["completion_tokens"]
            else:
                r = httpx.post(self.url + "/v1/chat/completions", headers=headers, json=body, timeout=a.request_timeout)
                if r.status_code != 200:
                    return {"ok": False, "error": f"HTTP {r.status_code}: {r.text[:200]}", "latency": time.perf_counter() - t0}
                tokens = r.json()["usage"]["completion_tokens"]
        except httpx.HTTPError as e:
            return {"ok": False, "error": repr(e), "latency": time.perf_counter() - t0}
        return {"ok": True, "latency": time.perf_counter() - t0, "ttft": ttft, "tokens": tokens, "stream": stream}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if r["ok"]]
    lat = [r["latency"] for r in ok]
    ttft = [r["ttft"] for r in ok if r.get("ttft") is not None]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "requests": len(results), "ok": len(ok), "failures": len(results) - len(ok),
        "wall_s": wall, "req_per_s": len(ok) / wall if wall else 0.0, "tok_per_s": tokens / wall if wall else 0.0,
        "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "max_s": max(lat) if lat else float("nan"),
        "ttft_p50_s": pct(ttft, 0.5), "ttft_p95_s": pct(ttft, 0.95), "tokens": tokens,
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (built on the spot), 'pocket', or a model folder")
    ap.add_argument("--clients", type=int, default=4, help="concurrent chat clients")
    ap.add_argument("--requests", type=int, default=6, help="chat requests per client")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--alone", type=int, default=6, help="sequential chat requests of the single-client baseline")
    ap.add_argument("--photos", type=int, default=4, help="photos per training job")
    ap.add_argument("--epochs", type=int, default=2, help="training recipe of the server (no conversations, no negatives)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--threads", type=int, help="the server's torch threads (default: torch's choice)")
    ap.add_argument("--no-training", action="store_true", help="no training job during the load phase")
    ap.add_argument("--request-timeout", type=float, default=600)
    ap.add_argument("--startup-timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, help="append the markdown report to this file")
    args = ap.parse_args()

    b = Bench(args)
    try:
        model = b.model_path()
        key = b.cli("users", "add", "bench", "--home", str(b.home)).strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {key}"}
        load_avg_start = os.getloadavg()
        startup = b.start(model)
        photos = photos_for(args.photos, b.tmp)
        photo_url = "data:image/jpeg;base64," + base64.b64encode(small_jpeg(photos[0])).decode()

        t0 = time.perf_counter()
        job = b.wait_job(h, b.train(h, "bo", photos), args.request_timeout * 4)
        train_alone = time.perf_counter() - t0
        if job["status"] != "succeeded":
            raise SystemExit(f"training <bo> failed: {job['error']}")

        b.chat(h, 0, photo_url)  # warm-up
        t0 = time.perf_counter()
        alone = [b.chat(h, i, photo_url) for i in range(args.alone)]
        alone_s = summarize(alone, time.perf_counter() - t0)

        results: list[dict] = []
        lock = threading.Lock()

        def client(c: int):
            for j in range(args.requests):
                r = b.chat(h, c + j, photo_url)
                with lock:
                    results.append(r)

        train_job = None if args.no_training else b.train(h, "rex", photos)
        t_load = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_load
        progress_at_end = None
        train_under_load = None
        if train_job:
            progress_at_end = httpx.get(f"{b.url}/v1/jobs/{train_job}", headers=h, timeout=60).json()
            final = b.wait_job(h, train_job, args.request_timeout * 4)
            train_under_load = (final["status"], (final["finished"] or 0) - (final["started"] or 0))
        load = summarize(results, wall)
        load_avg_end = os.getloadavg()
    finally:
        b.stop()

    lines = [
        f"### `{args.model}` — {args.clients} clients x {args.requests} requests, max_tokens {args.max_tokens}"
        + ("" if args.no_training else " + 1 training job"),
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_avg_start[0]:.1f} at start / {load_avg_end[0]:.1f} at end (the machine is shared); "
        f"server start {startup:.1f}s; torch threads {args.threads or 'default'}; recipe epochs={args.epochs}, k={args.k}, {args.photos} photos, no conversations/negatives."
        + (" Model: randomly initialised tiny LLaVA (2 layers, hidden 64) - measures the server, not a model." if args.model == "tiny" else ""),
        "",
        "| phase | requests | ok | failures | wall s | req/s | tokens/s | p50 s | p95 s | max s | TTFT p50 s | TTFT p95 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in (("1 client, alone", alone_s), (f"{args.clients} clients" + ("" if args.no_training else " + training"), load)):
        lines.append(f"| {name} | {s['requests']} | {s['ok']} | {s['failures']} | {s['wall_s']:.1f} | {s['req_per_s']:.2f} | "
                     f"{s['tok_per_s']:.1f} | {s['p50_s']:.2f} | {s['p95_s']:.2f} | {s['max_s']:.2f} | {s['ttft_p50_s']:.2f} | {s['ttft_p95_s']:.2f} |")
    lines += ["", f"- training <bo> alone through the API (upload -> succeeded; the server's first job, so with its warm-up): {train_alone:.1f}s"]
    if train_under_load:
        p = (progress_at_end or {}).get("progress", {})
        lines.append(f"- training <rex> during the load: {train_under_load[0]}, {train_under_load[1]:.1f}s from start to end "
                     f"(when the clients finished it was {progress_at_end['status']}, step {p.get('step', 0)}/{p.get('total_steps', '?')})")
    if load["errors"]:
        lines.append(f"- errors: {load['errors']}")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(report + "\n")
    if load["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
