"""How well does a concept recognise before its first training step, for each way of initialising its latents?

On the dev subjects of ``scripts/recipe_dev.py`` (never a reported test set): each subject's 4 training photos
give the initial latents; its test photos are the positives, the other dev subjects' test photos the negatives.
Prints the mean per-subject ROC-AUC of P(yes) to the product's recognition query, per initialisation.

    python scripts/concept_init_dev.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inits", default="embedding,visual,visual-global,visual-first")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from recipe_dev import dev_folder
    from yollava import YoLLaVA
    from yollava.concepts.concept import Concept, visual_latents
    from yollava.eval.datasets import load_folder
    from yollava.paths import cache_home, default_data_root
    from yollava.train import recognition_metrics

    data_root = Path(os.environ.get("YOLLAVA_DATA", default_data_root()))
    dataset = load_folder(dev_folder(data_root, cache_home() / "recipe_dev" / "subjects"), train_per_subject=4, seed=0)
    engine = YoLLaVA.from_pretrained("pocket")
    a = engine.adapter
    out = {}
    for init in args.inits.split(","):
        aucs = {}
        for s in dataset.subjects:
            feats = [engine.encode_image(p).features for p in s.train]
            c = Concept.initialise(s.name, a.embed_tokens.weight, a.lm_head.weight, k=16, seed=0,
                                   visual=None if init == "embedding" else (init.removeprefix("visual").strip("-") or "pooled", feats))
            engine.add_concept(c, replace=True)
            pos = s.test
            neg = [p for o in dataset.subjects if o is not s for p in o.test]
            scores = engine.yes_probabilities(s.name, pos + neg)
            labels = [True] * len(pos) + [False] * len(neg)
            aucs[s.name] = recognition_metrics(labels, scores, 0.5)["auc"]
            engine.unload_concept(s.name)
        out[init] = {"mean_auc": sum(aucs.values()) / len(aucs), "per_subject": aucs}
        print(init, json.dumps(out[init]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
