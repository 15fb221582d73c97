"""Choose the recipe on DEV subjects that no reported benchmark uses (never on the test photos we report).

Dev subjects: the cat <mam> (its 10 official training photos; the Yo'LLaVA data has no test photos for
it) and three Caltech-101 classes that look like single subjects (snoopy, garfield, dalmatian; 12
photos each). Seeded split, 4 training photos each, the rest test; negatives: the other dev subjects'
test photos + 30 random and 10 nearest pool photos held out per subject. The dev classes' folders are
removed from the pool the training-set builder sees, so they are never negatives of themselves.

    python scripts/recipe_dev.py --variant fast --out benchmarks/results/recipe_dev/fast.json --threads 1
    python scripts/recipe_dev.py --variant fast --seed 1 --out benchmarks/results/recipe_dev_v2/fast-seed1.json

Runs before pocket v2 (session 11) are in ``recipe_dev/``; on v2 in ``recipe_dev_v2/``.

``--scene`` (session 16): the same subjects pasted small into shared scenes (:func:`scene_folder`), for the domain
shortcut MyVLM shows (``scripts/domain_shift.py``) and the lever against it, scene negatives:

    python scripts/recipe_dev.py --scene --variant fast --out benchmarks/results/recipe_dev_v2/scene/fast-seed0.json
    python scripts/recipe_dev.py --scene --variant fast-scene --out benchmarks/results/recipe_dev_v2/scene/fast-scene-seed0.json

``--library`` (session 17): each subject also trains with the other dev subjects' training photos as photos without it
(``personalize --negatives``), the concept and the head alike:

    python scripts/recipe_dev.py --scene --library --variant fast --out benchmarks/results/recipe_dev_v2/scene/library-fast-seed0.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEV_CALTECH = ("snoopy", "garfield", "dalmatian")


def dev_folder(data_root: Path, root: Path, n_caltech: int = 12) -> Path:
    """Symlinks only: the data stays in ../shared."""
    for name, photos in [("mam", sorted((data_root / "yollava" / "mam" / "train").glob("*.jpg")))] + [
            (c, sorted((data_root / "pool" / "caltech101" / c).glob("*.jpg"))[:n_caltech]) for c in DEV_CALTECH]:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for p in photos:
            link = d / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
    return root


def scene_folder(data_root: Path, root: Path, n_caltech: int = 12, n_backgrounds: int = 60, seed: int = 0) -> Path:
    """The dev subjects in shared scenes (``--scene``): each dev photo pasted at 25-45 % of the frame on one of the first
    ``n_backgrounds`` CC12M photos (the subjects share them, as MyVLM's subjects share their owners' rooms); the other
    CC12M photos, bare, are every subject's extra test negatives (``hard_negatives_scene/``). The pool the runs train
    with has no CC12M photo, as the pool has none of MyVLM's rooms. Written once under ``root`` (not in the repo)."""
    import random

    from small_subject_dev import pasted

    backgrounds = sorted((data_root / "pool" / "cc12m").glob("*.jpg"))
    used, bare = backgrounds[:n_backgrounds], backgrounds[n_backgrounds:]
    rng = random.Random(seed)
    sources = [("mam", sorted((data_root / "yollava" / "mam" / "train").glob("*.jpg")))] + [
        (c, sorted((data_root / "pool" / "caltech101" / c).glob("*.jpg"))[:n_caltech]) for c in DEV_CALTECH]
    for name, photos in sources:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(photos):
            out, background = d / f"{i:02d}.jpg", rng.choice(used)
            if not out.exists():
                pasted(p, background, rng, scale=(0.25, 0.45)).save(out, quality=92)
        neg = root / "hard_negatives_scene" / name
        neg.mkdir(parents=True, exist_ok=True)
        for p in bare:
            if not (neg / p.name).exists():
                (neg / p.name).symlink_to(p.resolve())
    return root


VARIANTS = {
    "fast": {},  # as shipped (its run is committed as fast-no-views: the variant's name when views were the default)
    "fast-positive-views": {"positive_views": None},  # augmented views of the positives instead of repeats (run as "fast-views" in recipe_dev/, when the key below did not exist)
    "fast-2ep": {"epochs": 2},
    "fast-no-sentence": {"sentence_answers": False},
    "fast-k8": {"k": 8},
    "fast-lr3e-3": {"lr": 3e-3},
    "fast-lr1e-2": {"lr": 1e-2},
    "fast-2ep-lr3e-3": {"epochs": 2, "lr": 3e-3},
    "fast-3ep": {"epochs": 3},
    "fast-weighted": {"balance_by": "weight"},  # each positive once, its loss weighted (speed issue: fewer samples)
    "fast-weighted-k8": {"balance_by": "weight", "k": 8},
    "fast-weighted-lr2e-3": {"balance_by": "weight", "lr": 2e-3},
    "fast-weighted-lr3e-3": {"balance_by": "weight", "lr": 3e-3},
    "fast-weighted-bs4": {"balance_by": "weight", "batch_size": 4},
    "fast-weighted-x3": {"balance_by": "weight", "positive_repeats": 3},  # positives 3x, weighted for the rest
    "fast-neg60": {"n_easy_negatives": 36, "n_hard_negatives": 24, "sentence_negatives": 12},  # fewer negatives, repeats as fast
    "fast-bf16": {"precision": "bf16"},  # fast with the frozen model in bf16 during training steps (speed issue)
    # seed noise beside bf16 (does bf16 move results more than another seed does?); "model": fp32, fast before session 9
    "fast-fp32": {"precision": "model"},  # = fast as committed in fast-no-views.run
    "fast-seed1": {"seed": 1, "precision": "model"},
    "fast-bf16-seed1": {"precision": "bf16", "seed": 1},
    "fast-seed2": {"seed": 2, "precision": "model"},
    "fast-bf16-seed2": {"precision": "bf16", "seed": 2},
    "fast-seed3": {"seed": 3, "precision": "model"},
    "fast-bf16-seed3": {"precision": "bf16", "seed": 3},
    # pocket v2 (session 12): latents from the training photos' own visual tokens (scripts/concept_init_dev.py)
    "fast-visual": {"init": "visual"},
    "fast-visual-global": {"init": "visual-global"},
    "fast-visual-lr3e-4": {"init": "visual", "lr": 3e-4},
    "fast-visual-global-captions": {"init": "visual-global", "caption_photos": 4, "repeat_captions": False},  # + MyVLM's caption task
    "fast-visual-global-captions-x": {"init": "visual-global", "caption_photos": 4, "repeat_captions": True},  # captions balanced like positives
    "fast-session11": {"init": None, "caption_photos": 0, "repeat_captions": False},  # fast as it was before session 12 (mean-embedding latents, no captions)
    # MyVLM's method as a recipe (session 13); run it with --methods myvlm (recognition: the head) --captions
    "myvlm": {"recipe": "myvlm"},
    # session 14: the yes/no read as the best of the photo's views (TrainConfig.reading; scripts/small_subject_dev.py
    # measures it on the fast runs' own concepts without retraining: the reading does not change a training step)
    "fast-views": {"reading": "views"},
    # session 16, the speed issue: half the negatives (the positives' repeats follow them), so about half the steps
    "fast-half": {"n_easy_negatives": 30, "n_hard_negatives": 20, "sentence_negatives": 10},
    # session 16, the domain shortcut (run with --scene): one crop of each training photo without the subject, as "No"
    "fast-scene": {"scene_negatives": 1},
}


def variant_recipe(variant: str):
    """``fast`` with the variant's settings; ``precision="model"``: the model's own (fp32), as ``--precision model``."""
    from yollava.recipes import recipe_from_options

    settings = dict(VARIANTS[variant])
    base = settings.pop("recipe", "fast")
    return recipe_from_options(base, precision=settings.pop("precision", None)).override(**settings)


def _logit(p: float) -> float:
    import math

    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def threshold_rules(scores: list[float], labels: list[bool]) -> dict[str, float]:
    """Candidate yes/no thresholds from a concept's calibration scores (never from test photos)."""
    import math

    from yollava.calibration import best_accuracy_threshold

    pos = sorted(s for s, y in zip(scores, labels) if y)
    neg = sorted(s for s, y in zip(scores, labels) if not y)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    return {
        "0.5": 0.5,
        "best-calibration": best_accuracy_threshold(labels, scores),
        "logit-midpoint": sig((_logit(pos[0]) + _logit(neg[-1])) / 2) if pos and neg else 0.5,
        "logit-mean-midpoint": sig((sum(map(_logit, pos)) / len(pos) + sum(map(_logit, neg)) / len(neg)) / 2) if pos and neg else 0.5,
    }


def analyse(run_dirs: list[Path]) -> str:
    """Test weighted accuracy and AUC per variant under each threshold rule, from the run folders."""
    from yollava.train import recognition_metrics

    lines = ["| variant | subject | AUC | " + " | ".join(threshold_rules([0.9, 0.1], [True, False])) + " |",
             "|---|---|---:|" + "---:|" * 4]
    for run in run_dirs:
        totals: dict[str, list[float]] = {}
        for line in (run / "records.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r.get("method") != "yollava" or "scores" not in r:
                continue
            meta = json.loads((run / "concepts" / "yollava" / f"{r['subject']}.json").read_text())
            holdout = meta["metrics"]["holdout"]
            rules = threshold_rules(holdout["scores"], holdout["labels"])
            accs = {k: recognition_metrics(r["labels"], r["scores"], t)["weighted_accuracy"] for k, t in rules.items()}
            for k, v in accs.items():
                totals.setdefault(k, []).append(v)
            totals.setdefault("auc", []).append(r["metrics"]["auc"])
            lines.append(f"| {run.name} | {r['subject']} | {r['metrics']['auc']:.3f} | " + " | ".join(f"{v:.3f}" for v in accs.values()) + " |")
        if totals:
            mean = {k: sum(v) / len(v) for k, v in totals.items()}
            lines.append(f"| {run.name} | **mean** | {mean.pop('auc'):.3f} | " + " | ".join(f"{v:.3f}" for v in mean.values()) + " |")
    return "\n".join(lines)


def summary(results: list[Path]) -> str:
    """Mean and range over seeds of each variant's overall weighted accuracy (the concept's own threshold) and mean
    per-subject AUC, from ``<variant>-seed<N>.json`` reports; the head of the same runs beside them."""
    import re
    from collections import defaultdict

    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(results):
        m = re.fullmatch(r"(.+)-seed(\d+)", path.stem)
        if m and path.suffix == ".json" and not path.stem.endswith(".caption"):
            captions = path.with_suffix(".caption.json")
            recall = json.loads(captions.read_text())["overall"] if captions.exists() else {}
            overall = json.loads(path.read_text())["overall"]
            groups[m[1]].append({"seed": int(m[2]), **{k: {**v, "recall": recall.get(k, {}).get("recall")} for k, v in overall.items()}})
    lines = ["| variant | seeds | method | weighted acc: mean (min-max) | AUC: mean (min-max) | caption recall: seeds captioned, mean (min-max) |",
             "|---|---|---|---:|---:|---:|"]
    for variant, runs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        for method in ("yollava", "myvlm", "head"):
            rows = [r[method] for r in runs if method in r]
            if not rows:
                continue
            cells = []
            for key in ("weighted_accuracy", "auc"):
                v = [row[key] for row in rows]
                cells.append(f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            rec = [(r["seed"], r[method]["recall"]) for r in runs if method in r and r[method].get("recall") is not None]
            v = [x for _, x in rec]
            cells.append(f"{','.join(str(sd) for sd, _ in rec)}: {sum(v) / len(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "")
            lines.append(f"| {variant} | {seeds} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--analyse", type=Path, nargs="*", help="Run folders to compare (prints a table and exits).")
    ap.add_argument("--summary", type=Path, nargs="*", help="<variant>-seed<N>.json reports: mean and range over seeds (prints, exits).")
    ap.add_argument("--variant", default="fast", choices=sorted(VARIANTS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None, help="training seed (the dev split stays seed 0); default: the variant's")
    ap.add_argument("--methods", default="yollava,head")
    ap.add_argument("--captions", action="store_true",
                    help="then caption the dev test photos with the same concepts (caption recall; <out>.caption.json)")
    ap.add_argument("--subjects", default=None, help="comma-separated dev subjects (default: all; run parts side by side)")
    ap.add_argument("--library", action="store_true",
                    help="each subject trains with the other dev subjects' training photos as photos without it "
                         "(personalize --negatives: a user whose library holds the others; RecognitionDataset.with_library_negatives)")
    ap.add_argument("--scene", action="store_true",
                    help="the dev subjects pasted small into shared CC12M scenes, bare scenes among the test negatives, no CC12M "
                         "photo in the training pool (scene_folder: MyVLM's shared rooms on dev photos)")
    args = ap.parse_args()
    if args.analyse:
        print(analyse(args.analyse))
        return
    if args.summary:
        print(summary(args.summary))
        return

    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.eval.datasets import load_folder
    from yollava.eval import get_task, run_benchmark
    from yollava.eval.report import write_report
    from yollava.paths import cache_home, default_data_root
    from yollava.personalize import load_pool

    data_root = Path(os.environ.get("YOLLAVA_DATA", default_data_root()))
    if args.scene:
        root = scene_folder(data_root, cache_home() / "recipe_dev" / "scene_subjects")
    else:
        root = dev_folder(data_root, cache_home() / "recipe_dev" / "subjects")
    dataset = load_folder(root, train_per_subject=4, seed=0, name="recipe-dev-scene" if args.scene else "recipe-dev")
    if args.library:
        dataset = dataset.with_library_negatives()
    recipe = variant_recipe(args.variant)
    if args.seed is not None:
        recipe = recipe.override(seed=args.seed)

    def pool_fn():
        pool = load_pool(progress=True)
        banned = {e["path"] for e in pool.entries if any(f"/caltech101/{c}/" in e["path"] for c in DEV_CALTECH)
                  or (args.scene and "/cc12m/" in e["path"])}
        return pool.without(banned)

    engine = YoLLaVA.from_pretrained("pocket")
    task = get_task("recognition")(dataset, subjects=args.subjects.split(",") if args.subjects else None, pool_negatives=30,
                                   pool_hard_negatives=10, protocol_extra={"recipe": recipe.to_dict(), "variant": args.variant})
    results = run_benchmark(task, engine, args.methods.split(","), args.out.parent / f"{args.out.stem}.run",
                            train=recipe.train, data=recipe.data, pool_fn=pool_fn)
    results["title"] = f"recipe dev: {args.variant}"
    write_report(results, args.out, results["title"])
    print(json.dumps(results.get("overall", {}), indent=1, default=str)[:3000])
    if args.captions:  # the recognition run's concepts, reused (same photos and settings)
        run = args.out.parent / f"{args.out.stem}.run"
        caption_methods = [m for m in args.methods.split(",") if m != "head"]
        captions = run_benchmark(get_task("caption")(dataset, subjects=args.subjects.split(",") if args.subjects else None), engine,
                                 caption_methods, args.out.parent / f"{args.out.stem}.caption.run", train=recipe.train, data=recipe.data,
                                 pool_fn=pool_fn, reuse_from=[run])
        captions["title"] = f"recipe dev captions: {args.variant}"
        write_report(captions, args.out.with_suffix(".caption.json"), captions["title"])
        print(json.dumps(captions.get("overall", {}), indent=1, default=str)[:2000])


if __name__ == "__main__":
    main()
