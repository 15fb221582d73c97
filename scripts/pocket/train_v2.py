"""pocket v2: stage A (projector: word alignment + reconstruction + instance contrast, no LLM pass) then stage B
(projector + LoRA on the LLM's bf16 copy, on presence / yes-no / naming / colours / instance matching / where /
descriptions). Resumable: rerun the same command to continue.

    python scripts/pocket/prepare.py                       # once: feature maps of the pool and of its views
    python scripts/pocket/train_v2.py --out runs/pocket/v2-long  # ~110 min on 2 busy cores (README, "pocket")

Writes --out only (never the package); scripts/pocket/README.md says how to ship the result.
"""

import argparse
from pathlib import Path

import torch

from yollava.pocket_training import default_work_dir, load_features, load_views
from yollava.pocket_training.v2 import GRID, train_v2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="output folder (outside the package)")
    ap.add_argument("--work", type=Path, default=None, help=f"the feature cache (default {default_work_dir()})")
    ap.add_argument("--grid", type=int, default=GRID, help="visual tokens: grid x grid + 1 global")
    ap.add_argument("--stage-a-epochs", type=int, default=6)
    ap.add_argument("--samples", type=int, default=6400, help="stage-B samples (the shipped weights: 6400; the first v2: 2400)")
    ap.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    ap.add_argument("--projector-lr", type=float, default=1e-4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or default_work_dir()
    feats = load_features(work=work, grid=args.grid)
    train_v2(feats, load_views(work, args.grid), args.out, work=work, grid=args.grid, stage_a_epochs=args.stage_a_epochs,
             samples=args.samples, lr=args.lr, projector_lr=args.projector_lr, rank=args.rank, batch_size=args.batch_size,
             seed=args.seed)


if __name__ == "__main__":
    main()
