"""How much memory photos take in ``yollava serve``: per decode, per request, and for many requests at once.

    python benchmarks/serve_memory.py                                   # 24 MP photos, 16 requests at once
    python benchmarks/serve_memory.py --out benchmarks/results/serve_memory.md

Every number is the growth of the resident set (``VmRSS``, peak ``VmHWM`` after resetting it through
``/proc/self/clear_refs``) of a fresh child process, measured from just before the work starts (the model,
the server and the decoders already warmed up), so imports and the model do not count. Linux only.

* **decode**: one photo of each format, 6000x4000 (the default 24 MP limit), through the server's
  :class:`~yollava.serve.photos.PhotoDecoder`, beside what the decoder charges it against its budget;
* **per request**: what a chat with the most photos (4) keeps while it runs: its photos, decoded and shrunk;
* **server**: N ``/v1/recognize`` requests at once (``--requests``) on the tiny random model, each with a
  24 MP WebP (the costliest format) or a 1500x1500 JPEG: the peak, and what the process still holds after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = (6000, 4000)

COMMON = r'''
import io, json, sys, threading, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")
'''

DECODE = COMMON + r'''
from yollava.serve.config import Limits
from yollava.serve.photos import PhotoDecoder
blob = open(sys.argv[1], "rb").read()
limits = Limits()
decoder = PhotoDecoder(limits.max_pixels, limits.max_photo_side, limits.max_decoding, max_bytes=limits.max_decode_bytes)
from PIL import Image
small = io.BytesIO(); Image.new("RGB", (64, 64)).save(small, sys.argv[2]); decoder.open(small.getvalue())
base = reset()
start = time.perf_counter()
img, fmt = decoder.open(blob)
seconds = time.perf_counter() - start
print(json.dumps({"format": fmt, "peak": status("VmHWM") - base, "charged": decoder.budget.peak, "seconds": seconds,
                  "size": img.size}))
'''

PER_REQUEST = COMMON + r'''
from yollava.serve.config import Limits
from yollava.serve.photos import PhotoDecoder
blob = open(sys.argv[1], "rb").read()
limits = Limits()
decoder = PhotoDecoder(limits.max_pixels, limits.max_photo_side, limits.max_decoding, max_bytes=limits.max_decode_bytes)
decoder.open(blob)
base = reset()
kept = [decoder.open(blob)[0] for _ in range(limits.max_chat_images)]  # one chat with the most photos keeps them all
print(json.dumps({"photos": len(kept), "held": status("VmRSS") - base, "peak": status("VmHWM") - base, "size": kept[0].size}))
'''

SERVER = COMMON + r'''
from pathlib import Path
import httpx, torch
torch.set_num_threads(1)
from yollava.concepts import Concept, save_concept
from yollava import YoLLaVA
from yollava.models import load_model
from yollava.models.tiny import build_tiny_llava
from yollava.serve import ServerConfig, create_app
from yollava.serve.testing import ServerThread, data_url, jpeg_bytes, tiny_recipe
root = Path(sys.argv[1])
engine = YoLLaVA(load_model(str(build_tiny_llava(root / "model", init_range=0.5))))
train, data = tiny_recipe()
app = create_app(ServerConfig(model="tiny", home=root / "home", train=train, data=data), engine)
db = app.state.server.db
h = {"Authorization": f"Bearer {db.new_key(db.add_user('alice'))}"}
a = engine.adapter
save_concept(Concept.initialise("bo", a.embed_tokens.weight, a.lm_head.weight, k=2), root / "home/users/1/concepts", a.fingerprint())
blob, mime, n = open(sys.argv[2], "rb").read(), sys.argv[3], int(sys.argv[4])
body = {"concepts": ["bo"], "image": data_url(blob, mime), "mode": "yollava"}
with ServerThread(app) as s:
    for _ in range(2):  # warm up: the model, the request path
        r = httpx.post(s.url + "/v1/recognize", headers=h, json={**body, "image": data_url(jpeg_bytes())}, timeout=120)
        assert r.status_code == 200, r.text
    base = reset()
    start = time.perf_counter()
    codes = []
    post = lambda: codes.append(httpx.post(s.url + "/v1/recognize", headers=h, json=body, timeout=600).status_code)
    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    time.sleep(0.5)
    print(json.dumps({"codes": sorted(set(codes)), "peak": status("VmHWM") - base, "after": status("VmRSS") - base,
                      "seconds": seconds, "requests": n}))
'''


def photo(fmt: str) -> tuple[bytes, str, str]:
    """(bytes, mime type, Pillow format) of a 6000x4000 photo in ``fmt`` (one colour: small files, full decoding cost)."""
    from PIL import Image

    img = Image.new("RGB", SIZE, (30, 60, 90))
    buf = io.BytesIO()
    if fmt == "WEBP":
        img.save(buf, "WEBP", lossless=True, method=0)
    elif fmt == "GIF":
        img.convert("P").save(buf, "GIF")
    elif fmt == "TIFF":
        img.save(buf, "TIFF", compression="tiff_deflate")
    else:
        img.save(buf, fmt)
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp", "GIF": "image/gif"}[fmt]
    return buf.getvalue(), mime, fmt


def child(script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=16, help="recognize requests at once (default 16)")
    ap.add_argument("--formats", default="JPEG,PNG,WEBP,TIFF,BMP,GIF")
    ap.add_argument("--out", type=Path, help="append the report to this markdown file")
    args = ap.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux (/proc/self/clear_refs)")
    from yollava.serve.config import Limits

    limits = Limits()
    lines = [f"## serve memory, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             "",
             f"`python benchmarks/serve_memory.py --requests {args.requests}` on {platform.machine()}, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f} at the start; default limits: {limits.max_pixels / 1e6:.0f} MP, "
             f"photos shrunk to {limits.max_photo_side} px, {limits.max_decoding} decoders, decoding budget "
             f"{limits.max_decode_bytes / 2**20:.0f} MiB. Growth of the process's resident memory (MB = 10^6 bytes).",
             "",
             "| one 6000x4000 photo | file | peak while decoding | charged to the budget | seconds |",
             "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for fmt in args.formats.split(","):
            blob, mime, pil = photo(fmt)
            path = Path(tmp) / f"photo.{fmt.lower()}"
            path.write_bytes(blob)
            files[fmt] = (path, mime)
            r = child(DECODE, str(path), pil)
            size = f"{len(blob):,} B" if len(blob) < 10_000 else f"{len(blob) / 1e3:,.0f} KB"
            lines.append(f"| {fmt} | {size} | {mb(r['peak'])} | {mb(r['charged'])} | {r['seconds']:.2f} |")
            print(lines[-1], flush=True)
        r = child(PER_REQUEST, str(files.get("WEBP", next(iter(files.values())))[0]))
        lines += ["", f"A chat with {r['photos']} photos (the most one may carry) holds them decoded and shrunk "
                      f"({r['size'][0]}x{r['size'][1]}): {mb(r['held'])} ({mb(r['peak'])} at the peak, decoding included).", ""]
        print(lines[-2], flush=True)
        lines += [f"| {args.requests} `/v1/recognize` at once (tiny model) | peak | after | seconds |", "|---|---|---|---|"]
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (1500, 1500), (200, 30, 30)).save(buf, "JPEG", quality=90)
        (Path(tmp) / "small.jpg").write_bytes(buf.getvalue())
        runs = (("24 MP WebP each", files["WEBP"]), ("1500x1500 JPEG each", (Path(tmp) / "small.jpg", "image/jpeg")))
        for i, (label, (path, mime)) in enumerate(runs):
            r = child(SERVER, str(Path(tmp) / f"server{i}"), str(path), mime, str(args.requests))
            assert r["codes"] == [200], r
            lines.append(f"| {label} | {mb(r['peak'])} | {mb(r['after'])} | {r['seconds']:.1f} |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
