"""How a concept's recognition holds up when its subject fills only part of a cluttered photo — on the DEV subjects.

MyVLM's subjects are small objects in busy rooms; the dev subjects of ``scripts/recipe_dev.py`` fill their frames.
This script makes MyVLM-like conditions from dev photos only (never MyVLM, <bo> or a reported test set): each held-out
dev photo pasted at 40-60 % of the frame on a CC12M pool photo. It reuses the concepts a ``recipe_dev.py`` run
trained (no training here) and compares ways of reading the decision:

* ``whole``: the language model's P(yes) on the whole photo (what ``recognize`` reads today);
* ``views``: the largest P(yes) over the photo's views (:func:`yollava.images.photo_views`: the whole photo, squares
  covering a wide one, four corner crops at 60 % of each side), as the concept head already reads its photo — a
  concept with ``reading="views"``; its threshold re-calibrated the same way, on the run's own calibration samples
  (its training set's unused pool photos and unseen views of its photos: what training with ``TrainConfig(reading=
  "views")`` gives, since the reading does not change a training step);
* ``head``: the concept head, best view (the reference).

Test sets per subject: ``as is`` = the run's own test (its held-out photos; the other dev subjects' held-out photos
and its 40 pool photos as negatives); ``small`` = its held-out photos pasted (positives) vs the other dev subjects'
held-out photos pasted the same way and the bare backgrounds (negatives).

    python scripts/small_subject_dev.py --runs benchmarks/results/recipe_dev_v2/fast-visual-global-captions-x-seed{0,1,2}.run \
        --out benchmarks/results/recipe_dev_v2/small_subjects.md --threads 1
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.metrics import roc_auc_score

RULES = ("whole", "views", "head")


@functools.cache
def dev_pool():
    """The pool as ``recipe_dev.py`` gives it to its runs: without the dev classes' folders."""
    from recipe_dev import DEV_CALTECH

    from yollava.personalize import load_pool

    pool = load_pool(progress=True)
    return pool.without({e["path"] for e in pool.entries if any(f"/caltech101/{c}/" in e["path"] for c in DEV_CALTECH)})


def signature_embedder():
    return dev_pool().embedder


def pasted(photo: Path, background: Path, rng: random.Random, size: int = 384, scale: tuple[float, float] = (0.4, 0.6)) -> Image.Image:
    bg = ImageOps.fit(Image.open(background).convert("RGB"), (size, size), Image.BICUBIC)
    fg = Image.open(photo).convert("RGB")
    side = int(size * rng.uniform(*scale))
    fg.thumbnail((side, side), Image.BICUBIC)
    bg.paste(fg, (rng.randint(0, size - fg.width), rng.randint(0, size - fg.height)))
    return bg


def query(name: str) -> str:
    from yollava.prompts import RECOGNITION_QUERY

    return RECOGNITION_QUERY.format(identifier=f"<{name}>")


def scores(engine, name: str, images: list, signature) -> dict[str, list[float]]:
    from yollava.who import head_scores

    return {"whole": engine.prompt_yes_probabilities(query(name), images, [name]),
            "views": engine.prompt_yes_probabilities(query(name), images, [name], views=True),
            "head": head_scores(signature, signature_embedder(), images)}


def views_threshold(engine, name: str, training_set: dict, seed: int, views: bool = True) -> float:
    """The threshold training gives a concept that reads views: its calibration samples, scored that way
    (``views=False``: the whole photo, which must give back the threshold the run stored)."""
    from yollava.calibration import calibrate
    from yollava.data.augment import augmented_view
    from yollava.images import load_image

    held = [s for s in training_set["samples"] if s.get("calibration")]
    photos = [augmented_view(load_image(s["image"]), s["view"], seed) if s.get("view") else s["image"] for s in held]
    return calibrate([s["kind"] == "positive" for s in held], engine.prompt_yes_probabilities(query(name), photos, [name], views=views))


def metrics(pos: list[float], neg: list[float], threshold: float) -> tuple[float, float]:
    auc = roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)
    weighted = 0.5 * np.mean(np.array(pos) >= threshold) + 0.5 * np.mean(np.array(neg) < threshold)
    return float(weighted), float(auc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table-only", action="store_true", help="only write the table from <out>.jsonl (several runs side by side)")
    args = ap.parse_args()
    records = args.out.with_suffix(".jsonl")
    done = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.paths import cache_home, default_data_root
    from yollava.who import fit_signature

    data = Path(default_data_root())
    subjects_root = cache_home() / "recipe_dev" / "subjects"
    backgrounds = sorted((data / "pool" / "cc12m").glob("*.jpg"))
    engine = None
    for run in [] if args.table_only else args.runs:
        config = json.loads((run / "config.json").read_text())
        pool_negatives = json.loads((run / "pool_negatives.json").read_text())
        concepts = run / "concepts" / "yollava"
        if engine is None:
            engine = YoLLaVA.from_pretrained("pocket", concepts_dir=concepts)
        split = config["split"]
        rng = random.Random(args.seed)  # the same pasted photos for every run
        small = {s: [pasted(subjects_root / s / f, rng.choice(backgrounds), rng) for f in sp["test"]] for s, sp in split.items()}
        bare = {s: [ImageOps.fit(Image.open(rng.choice(backgrounds)).convert("RGB"), (384, 384)) for _ in sp["test"]]
                for s, sp in split.items()}
        for name, sp in split.items():
            if any(d["run"] == run.name and d["subject"] == name for d in done):
                continue
            engine.load_concept(concepts / f"{name}.json")
            # the concept head as the run's `head` method fits it (same photos, pool and seed)
            signature = fit_signature([subjects_root / name / f for f in sp["train"]], signature_embedder(), dev_pool(),
                                      seed=config.get("train", {}).get("seed", 0))
            training_set = json.loads((run / "training_sets" / "yollava" / f"{name}.json").read_text())
            thresholds = {"whole": engine.bank[name].threshold, "head": signature.head.threshold,
                          "views": views_threshold(engine, name, training_set, config.get("train", {}).get("seed", 0))}
            check = views_threshold(engine, name, training_set, config.get("train", {}).get("seed", 0), views=False)
            print(f"{run.name} {name}: stored threshold {thresholds['whole']:.4f}, recomputed {check:.4f}, views {thresholds['views']:.4f}", flush=True)
            sets = {
                "as is": ([subjects_root / name / f for f in sp["test"]],
                          [subjects_root / o / f for o, osp in split.items() if o != name for f in osp["test"]]
                          + [Path(p) for p in pool_negatives[name]]),
                "small": (small[name], [im for o in split if o != name for im in small[o]] + bare[name]),
            }
            lines = []  # written together, so a subject is either done or redone
            for set_name, (pos, neg) in sets.items():
                s_pos, s_neg = scores(engine, name, pos, signature), scores(engine, name, neg, signature)
                for rule in RULES:
                    w, a = metrics(s_pos[rule], s_neg[rule], thresholds[rule])
                    lines.append(json.dumps({"run": run.name, "subject": name, "set": set_name, "rule": rule, "weighted": w, "auc": a}))
                print(run.name, name, set_name, {r: round(metrics(s_pos[r], s_neg[r], thresholds[r])[1], 3) for r in RULES}, flush=True)
            with records.open("a") as f:
                f.write("\n".join(lines) + "\n")
            engine.unload_concept(name)
    table: dict = {}
    for d in [json.loads(line) for line in records.read_text().splitlines()]:
        table.setdefault((d["set"], d["rule"]), []).append((d["run"], d["subject"], d["weighted"], d["auc"]))
    runs = " ".join(str(r) for r in args.runs)
    lines = ["# Recognition of small subjects in clutter, on the dev subjects", "",
             f"`python scripts/small_subject_dev.py --runs {runs} --out {args.out} --threads {args.threads}`", "",
             "The concepts of the runs above (no training here). `small`: each held-out dev photo pasted at 40-60 % of a "
             "384 px frame on a CC12M pool photo; negatives the other dev subjects pasted the same way and bare backgrounds. "
             "Threshold: the concept's calibrated one for `whole`, re-calibrated on the same calibration samples read in views "
             "for `views`, the head's for `head`. Mean over subjects and runs; range over runs (each run's mean over its subjects) in brackets.", "",
             "| test set | rule | weighted acc | ROC-AUC |", "|---|---|---:|---:|"]
    for (set_name, rule), rows in table.items():
        by_run: dict[str, list] = {}
        for run_name, _, w, a in rows:
            by_run.setdefault(run_name, []).append((w, a))
        run_w = [np.mean([w for w, _ in v]) for v in by_run.values()]
        run_a = [np.mean([a for _, a in v]) for v in by_run.values()]
        lines.append(f"| {set_name} | {rule} | {np.mean(run_w):.3f} ({min(run_w):.3f}-{max(run_w):.3f}) | "
                     f"{np.mean(run_a):.3f} ({min(run_a):.3f}-{max(run_a):.3f}) |")
    lines += ["", "Per subject (weighted / AUC), every run:", "", "| test set | rule | run | subject | weighted | AUC |", "|---|---|---|---|---:|---:|"]
    for (set_name, rule), rows in table.items():
        lines += [f"| {set_name} | {rule} | {r} | {s} | {w:.3f} | {a:.3f} |" for r, s, w, a in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:14]))


if __name__ == "__main__":
    main()
