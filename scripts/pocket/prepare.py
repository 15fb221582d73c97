"""Step 0: run the frozen EfficientNet-Lite0 once over the pool and cache what training needs.

    python scripts/pocket/prepare.py

Writes <cache>/pocket-train/pool_features.safetensors: ``pooled`` (N, 10, 1280) = the 3x3 grid +
global average of the (1280, 7, 7) feature map, and ``colours`` (N, 11) = named-colour shares.
"""

import json
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

from common import POOL, WORK, colour_shares, list_pool

from yollava.images import load_image
from yollava.models.pocket.model import PocketConfig, pool_feature_map
from yollava.vision.efficientnet import EfficientNetLite, preprocess


def main(batch_size: int = 32):
    torch.manual_seed(0)
    photos = list_pool()
    grid = PocketConfig().grid
    print(f"{len(photos)} pool photos; splits:", {s: sum(p.split == s for p in photos) for s in ("train", "heldout_seen", "heldout_unseen")})
    vision = EfficientNetLite()
    pooled, colours = [], []
    t0 = time.time()
    for i in range(0, len(photos), batch_size):
        imgs = [load_image(p.path) for p in photos[i : i + batch_size]]
        with torch.no_grad():
            pooled.append(pool_feature_map(vision.feature_map(preprocess(imgs)), grid))
        colours += [colour_shares(img) for img in imgs]
        done = i + len(imgs)
        print(f"\r{done}/{len(photos)} photos, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    WORK.mkdir(parents=True, exist_ok=True)
    save_file({"pooled": torch.cat(pooled).contiguous(), "colours": torch.from_numpy(np.stack(colours)).float()},
              WORK / "pool_features.safetensors")
    (WORK / "pool_features.json").write_text(json.dumps({"grid": grid, "paths": [str(p.path.relative_to(POOL)) for p in photos]}))
    print(f"wrote {WORK / 'pool_features.safetensors'} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
