"""Stage 1, alignment: train the projector only (LLM and vision frozen) on captions made from real
class labels ("A photo of a {class}.") and colour facts computed from the pixels.

    python scripts/pocket/train_stage1.py            # ~15-20 min on 2 shared cores

Writes runs/pocket/stage1/ (projector) and, unless --no-install, the package weights (stage 1 only).
"""

import argparse
import json
import random
import time

import numpy as np
import torch

from common import COLOURS, RUNS, WEIGHTS_DIR, Batcher, Log, Sample, article, load_features, seed_all, train

from yollava.models.pocket.adapter import load_pocket, save_pocket_weights

CAPTION_QUESTIONS = ["What is in this photo?", "Describe this photo briefly.", "What does this photo show?"]


def build_samples(feats, rng: random.Random, n_imagenet: int, n_caltech: int, n_colour: int) -> list[Sample]:
    photos = feats["photos"]
    train_ids = [i for i, p in enumerate(photos) if p.split == "train"]
    imagenet = [i for i in train_ids if photos[i].source == "imagenet"]
    caltech = [i for i in train_ids if photos[i].source == "caltech101"]
    samples = []
    for i in rng.sample(imagenet, min(n_imagenet, len(imagenet))) + rng.sample(caltech, min(n_caltech, len(caltech))):
        samples.append(Sample(i, rng.choice(CAPTION_QUESTIONS), f"A photo of {article(photos[i].name)}.", "caption"))
    for i in rng.sample(train_ids, n_colour):
        shares = feats["colours"][i]
        order = np.argsort(-shares)
        top = [COLOURS[order[0]]] + ([COLOURS[order[1]]] if shares[order[1]] >= 0.2 else [])
        samples.append(Sample(i, "What colours are in this photo?", f"Mostly {' and '.join(top)}.", "colour"))
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagenet", type=int, default=300, help="ImageNet caption samples (one photo per class)")
    ap.add_argument("--caltech", type=int, default=120, help="Caltech caption samples")
    ap.add_argument("--colour", type=int, default=60, help="colour-fact samples")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster when other jobs share the 2 cores")
    ap.add_argument("--no-install", action="store_true", help="do not copy the result into the package weights")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    seed_all(args.seed)
    out = RUNS / "stage1"
    log = Log(out / "train.log")
    feats = load_features()
    samples = build_samples(feats, random.Random(args.seed), args.imagenet, args.caltech, args.colour)
    adapter = load_pocket(weights_dir=out / "none")  # random projector (seed 0), base LLM
    params = list(adapter.model.projector.parameters())
    for p in params:
        p.requires_grad_(True)
    batcher = Batcher(adapter)
    t0 = time.time()

    def save(step, history):
        meta = {"stage": 1, "grid": adapter.model.config.grid, "lora": None,
                "training": {"stage1": {"samples": len(samples), "steps": step, "batch_size": args.batch_size,
                                        "lr": args.lr, "seed": args.seed, "minutes": round((time.time() - t0) / 60, 1),
                                        "loss_first50": float(np.mean(history[:50])),
                                        "loss_last50": float(np.mean(history[-50:]))}}}
        save_pocket_weights(out, adapter.model.projector.state_dict(), None, meta)
        (out / "loss.json").write_text(json.dumps(history))

    train(adapter, batcher, feats["pooled"], samples, params, lr=args.lr, epochs=args.epochs,
          batch_size=args.batch_size, seed=args.seed, log=log, on_checkpoint=save)
    if not args.no_install:
        import shutil

        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        for f in ("pocket.safetensors", "pocket.json"):
            shutil.copy(out / f, WEIGHTS_DIR / f)
        log(f"installed stage 1 weights into {WEIGHTS_DIR}")
    log(f"stage 1 done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
