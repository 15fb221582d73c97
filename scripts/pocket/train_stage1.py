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


def word_alignment(adapter, feats, epochs: int, lr: float, seed: int, log) -> dict:
    """Stage 0 (seconds, no LLM pass): make the projector's tokens land near the LLM's own input
    embedding of the photo's class name (mean of its token rows), DeViSE-style: a mean-squared
    error towards that point plus a contrastive term against all other seen class names. The
    LLM then starts out reading a photo of a dog as something close to the word "dog"."""
    import torch.nn.functional as F

    photos, tok = feats["photos"], adapter.tokenizer
    idx = [i for i, p in enumerate(photos) if p.split == "train" and p.name]
    names = sorted({photos[i].name for i in idx})
    emb = adapter.embed_tokens.weight.detach()
    target = torch.stack([emb[tok(" " + n, add_special_tokens=False)["input_ids"]].mean(0) for n in names])
    y = torch.tensor([names.index(photos[i].name) for i in idx])
    x = feats["pooled"][idx].float()
    proj = adapter.model.projector
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    scale = target.norm(dim=-1).pow(2).mean()
    tnorm = F.normalize(target, dim=-1)
    for epoch in range(epochs):
        tot = acc = 0.0
        for b in torch.randperm(len(idx), generator=g).split(64):
            out = proj(x[b])
            mse = (out - target[y[b]][:, None]).pow(2).sum(-1).mean() / scale
            logits = F.normalize(out.mean(1), dim=-1) @ tnorm.T / 0.05
            loss = mse + F.cross_entropy(logits, y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(b)
            acc += (logits.argmax(-1) == y[b]).sum().item()
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"stage 0 epoch {epoch + 1}/{epochs}: loss {tot / len(idx):.3f}, train top-1 {acc / len(idx):.2f}")
    return {"epochs": epochs, "lr": lr, "photos": len(idx), "classes": len(names), "final_loss": tot / len(idx)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagenet", type=int, default=300, help="ImageNet caption samples (one photo per class)")
    ap.add_argument("--caltech", type=int, default=120, help="Caltech caption samples")
    ap.add_argument("--colour", type=int, default=60, help="colour-fact samples")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3, help="after stage 0, use a lower one (3e-4) so as not to erase it")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is faster when other jobs share the 2 cores")
    ap.add_argument("--word-epochs", type=int, default=0,
                    help="stage 0 (word alignment) epochs; 0 = none, as for the shipped weights; 20 in the experiment")
    ap.add_argument("--only-stage0", action="store_true", help="stop after stage 0 (for comparisons)")
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
    stage0 = word_alignment(adapter, feats, args.word_epochs, 1e-3, args.seed, log) if args.word_epochs else None
    if stage0:
        log(f"stage 0 done in {time.time() - t0:.0f} s")
    if args.only_stage0:
        save_pocket_weights(RUNS / "stage0", adapter.model.projector.state_dict(), None,
                            {"stage": 0, "grid": adapter.model.config.grid, "lora": None, "training": {"stage0": stage0}})
        return

    def save(step, history):
        meta = {"stage": 1, "grid": adapter.model.config.grid, "lora": None,
                "training": {"stage0": stage0, "stage1": {"samples": len(samples), "steps": step, "batch_size": args.batch_size,
                                        "lr": args.lr, "seed": args.seed, "minutes": round((time.time() - t0) / 60, 1),
                                        "loss_first10": float(np.mean(history[:10])),
                                        "loss_last10": float(np.mean(history[-10:]))}}}
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
