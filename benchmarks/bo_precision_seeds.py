"""<bo> trained with the `fast` recipe in fp32 and in bf16, for several seeds: how far the training precision moves
the recognition result, beside how far the seed alone moves it (one epoch of 33 steps is sensitive to its batch order).

    python benchmarks/bo_precision_seeds.py --seeds 0,1,2 --threads 2 --out benchmarks/results/bo_precision_seeds.md

Same training set (built once, conversation answers from the answer cache), same calibration; only the seed (the
concept's initial noise and the batch order) and the frozen model's precision in training steps change. Scored on
<bo>'s 10 test photos vs the other 38 subjects, at each concept's own threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_speed import score_bo  # noqa: E402

from yollava import YoLLaVA  # noqa: E402
from yollava.paths import default_data_root  # noqa: E402
from yollava.personalize import ConceptPipeline, load_pool  # noqa: E402
from yollava.recipes import get_recipe  # noqa: E402
from yollava.train import ConceptTrainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--precisions", default="model,bf16", help="'model' = the model's own (fp32 on a CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bo_precision_seeds.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = default_data_root() / "yollava" / "bo"
    engine = YoLLaVA.from_pretrained("pocket", concepts_dir=Path("/tmp/yollava-precision-concepts"))
    recipe = get_recipe("fast")
    ts = ConceptPipeline(engine, recipe, pool=load_pool(progress=False)).training_set("bo", sorted((root / "train").glob("*.jpg")))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for precision in args.precisions.split(","):
            config = replace(recipe.train, seed=seed, precision=None if precision == "model" else precision)
            t0 = time.perf_counter()
            result = ConceptTrainer(engine, "bo", config, progress=False).fit(ts.samples)
            seconds = time.perf_counter() - t0
            m = score_bo(engine, root, result.concept.threshold)
            rows.append({"seed": seed, "precision": result.concept.meta["metrics"]["precision"], "seconds": seconds,
                         "weighted_accuracy": m["weighted_accuracy"], "auc": m["auc"], "threshold": m["threshold"]})
            print(json.dumps(rows[-1]), flush=True)
    lines = [f"# <bo>, `fast` recipe: training precision vs seed (`{' '.join(sys.argv[1:]) or 'defaults'}`)", "",
             f"pocket on the CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "at the end; seconds = training + calibration (the training set was built once, answers cached). "
             f"<bo>'s 10 test photos vs {m['n_negative']} other subjects, at each concept's own threshold.", "",
             "| seed | precision | weighted accuracy | AUC | threshold | seconds |", "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['seed']} | {r['precision']} | {r['weighted_accuracy']:.3f} | {r['auc']:.3f} | {r['threshold']:.2f} | {r['seconds']:.0f} |" for r in rows]
    for p in dict.fromkeys(r["precision"] for r in rows):
        sel = [r for r in rows if r["precision"] == p]
        lines.append(f"| **mean** | {p} | **{mean(r['weighted_accuracy'] for r in sel):.3f}** | **{mean(r['auc'] for r in sel):.3f}** | | "
                     f"{mean(r['seconds'] for r in sel):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
