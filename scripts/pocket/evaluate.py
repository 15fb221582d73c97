"""Held-out quality of the pocket VLM, beside chance (``yollava.models.pocket.training.evaluate``).

    python scripts/pocket/evaluate.py                                   # the shipped weights
    python scripts/pocket/evaluate.py --weights random runs/pocket/stage1 package --out benchmarks/results/pocket_quality.md

Reads weights folders; writes only the --out table.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from yollava.models.pocket.adapter import WEIGHTS_DIR, load_pocket
from yollava.models.pocket.training import load_features, random_pocket
from yollava.models.pocket.training.data import main_colour
from yollava.models.pocket.training.evaluate import CHANCE, build_eval, check_cached_features, evaluate

ROOT = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["package"],
                    help="'package' (shipped), 'random' (untrained projector) or a weights folder")
    ap.add_argument("--n", type=int, default=50, help="photos per group (one per class)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    feats = load_features()
    names, hard, groups, cats, colour_ids = build_eval(feats, args.n, args.seed)
    photos = feats["photos"]
    train_main = [main_colour(feats["colours"][i]) for i, p in enumerate(photos) if p.split == "train"]
    train_main = [c for c in train_main if c]
    majority = max(set(train_main), key=train_main.count)
    majority_acc = float(np.mean([main_colour(feats["colours"][i]) == majority for i in colour_ids]))
    results, meta = {}, {}
    for w in args.weights:
        t0 = time.time()
        folder = {"package": WEIGHTS_DIR}.get(w) or Path(w)
        if not folder.is_absolute() and not folder.exists():
            folder = ROOT / folder  # paths relative to the repository root work from anywhere
        if w != "random" and not (folder / "pocket.json").is_file():
            raise SystemExit(f"no pocket weights in {folder}")
        adapter = random_pocket(progress=False) if w == "random" else load_pocket(weights_dir=folder, progress=False)
        check_cached_features(adapter, feats, groups["heldout_seen"][:2])
        results[w] = evaluate(adapter, feats, names, hard, groups, cats, colour_ids, args.seed)
        info = folder / "pocket.json"
        meta[w] = json.loads(info.read_text()) if info.is_file() else {"stage": 0}
        print(f"{w}: {time.time() - t0:.0f} s", json.dumps(results[w], indent=1), flush=True)
        del adapter

    head = ["metric", "chance"] + [f"{w} (stage {meta[w].get('stage')})" for w in args.weights]
    lines = ["# pocket VLM: held-out quality", "",
             f"`python scripts/pocket/evaluate.py --weights {' '.join(args.weights)} --n {args.n} --seed {args.seed}`", "",
             f"Held-out photos only (never trained on): naming/presence use {len(groups['heldout_seen'])} photos of "
             f"classes seen in training and {len(groups['heldout_unseen'])} of classes never seen (one photo per class); "
             f"generic yes/no {len(cats)} questions (balanced); colour {len(colour_ids)} photos "
             f"(majority-colour baseline '{majority}': {majority_acc:.2f}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in results[args.weights[0]]:
        row = [k, f"{CHANCE[k]:.2f}" if k in CHANCE else ""] + [f"{results[w][k]:.2f}" for w in args.weights]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out = out if out.is_absolute() else ROOT / out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
