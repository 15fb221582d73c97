"""Held-out quality of the pocket VLM, beside chance (``yollava.pocket_training.evaluate``).

    python scripts/pocket/evaluate.py                                   # the shipped weights
    python scripts/pocket/evaluate.py --weights v1 package --n 40 --out benchmarks/results/pocket_quality.md   # v1 beside v2

Each weights folder is evaluated at its own visual-token grid (pocket.json "grid"); the photos and questions are the
same for all. Besides v1's metrics: instance matching and where-on-a-collage on held-out views (``prepare.py``), and
unedited answers to "What is in this photo?", "Describe this photo." and "What is the dog doing?" on held-out photos.

Reads weights folders; writes only the --out table.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from yollava.models.pocket.adapter import V1_WEIGHTS_DIR, WEIGHTS_DIR, load_pocket
from yollava.pocket_training import default_work_dir, load_features, load_views, random_pocket
from yollava.pocket_training.data import main_colour
from yollava.pocket_training.evaluate import (CHANCE, build_eval, check_cached_features, evaluate, evaluate_views,
                                                     sample_answers)

ROOT = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["package"],
                    help="'package' (shipped), 'v1' (pocket-v1), 'random' (untrained projector) or a weights folder")
    ap.add_argument("--n", type=int, default=50, help="photos per group (one per class)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    feats = load_features(grid=3)
    names, hard, groups, cats, colour_ids = build_eval(feats, args.n, args.seed)
    photos = feats["photos"]
    train_main = [main_colour(feats["colours"][i]) for i, p in enumerate(photos) if p.split == "train"]
    train_main = [c for c in train_main if c]
    majority = max(set(train_main), key=train_main.count)
    majority_acc = float(np.mean([main_colour(feats["colours"][i]) == majority for i in colour_ids]))
    results, meta, answers = {}, {}, {}
    for w in args.weights:
        t0 = time.time()
        folder = {"package": WEIGHTS_DIR, "v1": V1_WEIGHTS_DIR}.get(w) or Path(w)
        if not folder.is_absolute() and not folder.exists():
            folder = ROOT / folder  # paths relative to the repository root work from anywhere
        if w != "random" and not (folder / "pocket.json").is_file():
            raise SystemExit(f"no pocket weights in {folder}")
        adapter = random_pocket(progress=False) if w == "random" else load_pocket(weights_dir=folder, progress=False)
        grid = adapter.model.config.grid
        feats_w = load_features(grid=grid)
        check_cached_features(adapter, feats_w, groups["heldout_seen"][:2])
        results[w] = evaluate(adapter, feats_w, names, hard, groups, cats, colour_ids, args.seed)
        results[w].update(evaluate_views(adapter, feats_w, load_views(default_work_dir(), grid), args.seed))
        answers[w] = sample_answers(adapter, feats_w, args.seed)
        info = folder / "pocket.json"
        meta[w] = json.loads(info.read_text()) if info.is_file() else {"stage": 0}
        print(f"{w}: {time.time() - t0:.0f} s", json.dumps(results[w], indent=1), flush=True)
        del adapter

    head = ["metric", "chance"] + [f"{w} (v{meta[w].get('version', 1)}, stage {meta[w].get('stage')})" for w in args.weights]
    lines = ["# pocket VLM: held-out quality", "",
             f"`python scripts/pocket/evaluate.py --weights {' '.join(args.weights)} --n {args.n} --seed {args.seed}`", "",
             f"Held-out photos only (never trained on): naming/presence use {len(groups['heldout_seen'])} photos of "
             f"classes seen in training and {len(groups['heldout_unseen'])} of classes never seen (one photo per class); "
             f"generic yes/no {len(cats)} questions (balanced); colour {len(colour_ids)} photos "
             f"(majority-colour baseline '{majority}': {majority_acc:.2f}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys(k for w in args.weights for k in results[w]))
    for k in keys:
        row = [k, f"{CHANCE[k]:.2f}" if k in CHANCE else ""] + [f"{results[w][k]:.2f}" if k in results[w] else "" for w in args.weights]
        lines.append("| " + " | ".join(row) + " |")
    for w in args.weights:
        lines += ["", f"## Unedited answers on held-out photos: {w}", "",
                  "| question | photo (class; main colours) | answer | names the class | names a colour |", "|---|---|---|---|---|"]
        for a in answers[w]:
            text = a["answer"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {a['question']} | {a['photo']} ({a['class']}; {', '.join(a['main_colours'])}) | {text} | "
                         f"{'yes' if a['names_class'] else 'no'} | {'yes' if a['names_colour'] else 'no'} |")
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
