"""How fast photos become features (the pool index, concept heads, who-is-here and pocket's visual tokens all start here).

    python benchmarks/embed_speed.py --threads 2 --photos 256 --out benchmarks/results/embed_speed.md

Prints, per photo: EfficientNet-Lite0's feature map with the shipped channels-last weights and with plain (NCHW)
weights, how far apart their features are, and the whole path from JPEG files on disk to pooled features
(``data.pool.embed_files``: decode, resize, crop, network) on that many pool photos, with the decode + preprocess
share timed on its own.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def per_photo_ms(fn, batch: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / batch * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photos", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from PIL import Image

    from yollava.data.pool import embed_files, scan_images
    from yollava.paths import default_data_root
    from yollava.vision.efficientnet import EfficientNetLite, preprocess

    net = EfficientNetLite()
    x = torch.randn(32, 3, 224, 224)
    with torch.no_grad():
        shipped = per_photo_ms(lambda: net.feature_map(x), 32)
        a = net.feature_map(x)
        net.net.to(memory_format=torch.contiguous_format)
        plain = per_photo_ms(lambda: net.feature_map(x), 32)
        gap = float((a - net.feature_map(x)).abs().max())
        net.net.to(memory_format=torch.channels_last)
    photos = scan_images(Path(os.environ.get("YOLLAVA_DATA", default_data_root())) / "pool" / "caltech101")[: args.photos]
    t = time.perf_counter()
    [preprocess([Image.open(p)]) for p in photos]
    decode = (time.perf_counter() - t) / len(photos) * 1000
    t = time.perf_counter()
    embed_files(net, photos)
    total = (time.perf_counter() - t) / len(photos) * 1000
    load = os.getloadavg()[0]
    lines = ["# Photo -> features", "", f"`python benchmarks/embed_speed.py --threads {args.threads} --photos {args.photos}`", "",
             f"{args.threads} thread(s), load average {load:.1f} at the end; batch 32, best of 3.", "",
             "| what | ms / photo |", "|---|---:|",
             f"| Lite0 feature map, channels-last weights (shipped) | {shipped:.1f} |",
             f"| Lite0 feature map, plain NCHW weights | {plain:.1f} |",
             f"| {len(photos)} pool JPEGs -> pooled features (`embed_files`) | {total:.1f} |",
             f"| of which decode + resize + crop | {decode:.1f} |", "",
             f"Largest difference between channels-last and plain features: {gap:.1e} (activations reach about 6)."]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
