"""Step 0: run the frozen EfficientNet-Lite0 once over the pool and cache what training needs.

    python scripts/pocket/prepare.py [--pool DIR] [--work DIR]

Writes <cache>/pocket-train/pool_features.safetensors (``yollava.models.pocket.training.data.prepare_features``).
"""

import argparse
from pathlib import Path

from yollava.models.pocket.training import default_pool, default_work_dir, prepare_features


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=Path, default=None, help=f"the photo pool (default {default_pool()})")
    ap.add_argument("--work", type=Path, default=None, help=f"the feature cache (default {default_work_dir()})")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    prepare_features(args.pool, args.work, args.batch_size)


if __name__ == "__main__":
    main()
