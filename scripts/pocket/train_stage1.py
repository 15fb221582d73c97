"""Stage 1, alignment: train the projector only (LLM and vision frozen) on captions made from real
class labels ("A photo of a {class}.") and colour facts computed from the pixels.

    python scripts/pocket/train_stage1.py --out runs/pocket/stage1      # ~15-20 min on 2 shared cores

Writes pocket.safetensors + pocket.json (and train.log, loss.json) into --out, never into the package
(see README.md, "Updating the shipped weights"). The work is ``yollava.pocket_training.train_stage1``.
"""

import argparse

import torch

from yollava.pocket_training import load_features, train_stage1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="output folder for the weights (outside the package)")
    ap.add_argument("--imagenet", type=int, default=300, help="ImageNet caption samples (one photo per class)")
    ap.add_argument("--caltech", type=int, default=120, help="Caltech caption samples")
    ap.add_argument("--colour", type=int, default=60, help="colour-fact samples")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3, help="after stage 0, use a lower one (3e-4) so as not to erase it")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster when other jobs share the 2 cores")
    ap.add_argument("--word-epochs", type=int, default=0,
                    help="stage 0 (word alignment) epochs; 0 = none; 20 for the shipped weights")
    ap.add_argument("--only-stage0", action="store_true", help="stop after stage 0 (how the shipped weights were made)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_stage1(load_features(), args.out, imagenet=args.imagenet, caltech=args.caltech, colour=args.colour,
                 epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, word_epochs=args.word_epochs,
                 only_stage0=args.only_stage0)


if __name__ == "__main__":
    main()
