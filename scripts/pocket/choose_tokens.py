"""How many visual tokens for pocket v2: what each grid keeps of a photo, against what it costs.

    python scripts/pocket/choose_tokens.py --out benchmarks/results/pocket_tokens.md

For each grid G (G x G local averages of the 7x7 EfficientNet-Lite0 map + 1 global token), on held-out pool photos
only (``heldout_seen`` pairs of ``views.json``; never MyVLM or <bo>):
  * instance AUC of the pooled grid itself: cosine of two views of one photo vs a view of another photo of the same
    class (flattened grid) — how much of "this one" the grid keeps before any projector;
  * the same after a stage-A projector trained for --epochs (v2's objective) — what survives the projector;
  * seconds per sample of a training step through the LLM (bf16 copy, one photo + a recognition question,
    the photo inside the prompt) — what the tokens cost.
"""

import argparse
import time
from pathlib import Path

import torch

from yollava.pocket_training import default_work_dir, load_features, load_views
from yollava.pocket_training.loop import random_pocket
from yollava.pocket_training.samples import Sample
from yollava.pocket_training.v2 import PocketLossV2, align_projector, token_probes


def step_cost(adapter, grid: int, repeats: int = 3) -> float:
    adapter.model.config.grid = grid
    table = torch.randn(8, grid * grid + 1, 1280).half()
    loss_fn = PocketLossV2(adapter, table, precision="bf16")
    batch = [Sample(i, "Can you see if sks is in this photo? Answer with a single word or phrase.", "Yes", "x") for i in range(8)]
    best = float("inf")
    for _ in range(repeats):
        t = time.time()
        loss_fn(batch).backward()
        best = min(best, (time.time() - t) / len(batch))
    adapter.model.projector.zero_grad(set_to_none=True)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", default="3,4,5,7")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = default_work_dir()
    rows = []
    for grid in map(int, args.grids.split(",")):
        feats, views = load_features(work=work, grid=grid), load_views(work, grid)
        adapter = random_pocket(progress=False)
        adapter.model.config.grid = grid
        raw = token_probes(lambda x: x, feats, views)["instance_auc_pooled"]
        align_projector(adapter, feats, views, epochs=args.epochs, log=lambda m: None)
        probes = token_probes(adapter.model.projector, feats, views)
        cost = step_cost(adapter, grid)
        rows.append((grid, grid * grid + 1, raw, probes["instance_auc_tokens"], cost))
        print(f"grid {grid}: {grid * grid + 1} tokens, instance AUC pooled {raw:.3f}, after stage A {probes['instance_auc_tokens']:.3f}, "
              f"{cost:.3f} s/sample", flush=True)
    lines = ["# pocket v2: how many visual tokens", "", f"`python scripts/pocket/choose_tokens.py --grids {args.grids} --epochs {args.epochs} "
             f"--threads {args.threads}`", "",
             "Held-out pool photos only (`heldout_seen` pairs: two views of one photo vs a view of another photo of the same class).",
             f"Stage A projector: {args.epochs} epochs of v2's objective. Cost: one training step through the LLM's bf16 copy "
             f"(photo + recognition question, batch 8, best of 3), {args.threads} thread(s).", "",
             "| grid | visual tokens | instance AUC, pooled grid | instance AUC, after stage A | s/sample |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {g}x{g}+1 | {n} | {r:.3f} | {t:.3f} | {c:.3f} |" for g, n, r, t, c in rows]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
