"""Stage 2, visual instruction tuning: projector + a small LoRA on the LLM's attention, trained on
short questions about the pool photos whose answers come from real labels and from the pixels
(presence, generic yes/no, naming, colours: ``yollava.pocket_training.samples``).

    python scripts/pocket/train_stage2.py --init runs/pocket/stage1 --out runs/pocket/stage2   # ~35-45 min

Reads --init (stage 1's --out), writes --out, never the package (README.md, "Updating the shipped weights").
"""

import argparse

import torch

from yollava.pocket_training import load_features, train_stage2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="stage 1 weights folder")
    ap.add_argument("--out", required=True, help="output folder for the weights (outside the package)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--projector-lr", type=float, default=None,
                    help="projector learning rate (default: --lr; lower keeps a stage 0 alignment)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster when other jobs share the 2 cores")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_stage2(load_features(), args.init, args.out, samples=args.samples, epochs=args.epochs, lr=args.lr,
                 projector_lr=args.projector_lr, rank=args.rank, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed)


if __name__ == "__main__":
    main()
