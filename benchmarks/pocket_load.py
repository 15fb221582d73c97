"""How long the pocket VLM takes to load: cold (assemble the GGUF from its six packages, de-quantise,
write the safetensors cache) and warm (from that cache). Each run is a fresh Python process.

    python benchmarks/pocket_load.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.perf_counter()
from yollava.models.pocket import load_pocket
from yollava.models.pocket.llm import cache_dir
t1 = time.perf_counter()
cold = not (cache_dir() / "VERSION").exists()
adapter = load_pocket(progress=False)
t2 = time.perf_counter()
from PIL import Image
adapter.encode_images([Image.new("RGB", (320, 240), (120, 80, 40))])
t3 = time.perf_counter()
print(json.dumps({"cold": cold, "import": t1 - t0, "load": t2 - t1, "first_photo": t3 - t2}))
"""


def run(cache: str) -> dict:
    env = {**os.environ, "YOLLAVA_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="warm loads to time")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="yollava-bench-") as cache:
        rows.append(("cold (GGUF -> cache)", run(cache)))
        for i in range(args.repeat):
            rows.append((f"warm #{i + 1} (cache)", run(cache)))
    print(f"{'load':<22} {'import s':>9} {'load s':>8} {'1st photo s':>12} {'total s':>8}")
    for name, r in rows:
        total = r["import"] + r["load"] + r["first_photo"]
        print(f"{name:<22} {r['import']:>9.1f} {r['load']:>8.1f} {r['first_photo']:>12.2f} {total:>8.1f}")


if __name__ == "__main__":
    main()
