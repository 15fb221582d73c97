"""Step 0: run the frozen EfficientNet-Lite0 once over the pool (and over the views made from it) and cache what
training needs.

    python scripts/pocket/prepare.py            # pocket v2: 7x7 feature maps of the pool, then the views (~15-25 min)
    python scripts/pocket/prepare.py --v1       # pocket v1's cache: the 3x3 grid only (reproduces v1's runs)

Writes into <cache>/pocket-train (``yollava.pocket_training``: ``prepare_feature_maps``, ``prepare_views``,
``prepare_features`` for v1). Steps already done are skipped unless --force.
"""

import argparse
from pathlib import Path

import torch

from yollava.pocket_training import (default_pool, default_work_dir, load_features, prepare_feature_maps,
                                            prepare_features, prepare_views)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=Path, default=None, help=f"the photo pool (default {default_pool()})")
    ap.add_argument("--work", type=Path, default=None, help=f"the feature cache (default {default_work_dir()})")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--v1", action="store_true", help="only v1's cache of the 3x3 grid")
    ap.add_argument("--force", action="store_true", help="redo steps whose output exists")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or default_work_dir()
    if args.v1:
        prepare_features(args.pool, work, args.batch_size)
        return
    if args.force or not (work / "pool_fmaps.safetensors").is_file():
        prepare_feature_maps(args.pool, work, args.batch_size)
    if args.force or not (work / "views.safetensors").is_file():
        prepare_views(load_features(args.pool, work, grid=1), work, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
