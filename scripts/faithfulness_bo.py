"""How close is our training data for <bo> to the official Yo'LLaVA data? Prints a markdown report.

    .venv/bin/python scripts/faithfulness_bo.py [--data ../shared/data] [--index-dir DIR] > benchmarks/results/faithfulness_bo.md

Hard negatives: ours come from the local pool (ImageNet/Caltech-101/CC12M, ~5,100 photos) by
EfficientNet-Lite0 similarity; the official ones are 150 LAION photos retrieved by CLIP. Both are
compared in one embedding (EfficientNet-Lite0 pooled features) and by EfficientNet's ImageNet top-1
class. Conversations/recognition: our questions vs the official training jsons.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from yollava.data.builder import build_training_set
from yollava.data.pool import ImagePool
from yollava.data.templates import conversation_questions, negative_templates, positive_templates, replace_subject
from yollava.images import file_sha256, list_images, load_image
from yollava.paths import default_data_root
from yollava.vision.efficientnet import preprocess

DOGS = range(151, 269)  # ImageNet-1k domestic dog classes
CANINE = range(151, 276)  # ... plus wolves, coyote, dingo, dhole, African hunting dog (Shiba Inus often come out "dingo")
CATS = range(281, 286)  # domestic cats


def imagenet_names(pool_dir: Path) -> list[str]:
    """Class names in ImageNet index order: the pool's imagenet/<wnid>_<name>.jpg sorted by wnid."""
    files = sorted(pool_dir.glob("imagenet/n*_*.jpg"))
    assert len(files) == 1000, f"expected 1000 ImageNet photos, found {len(files)}"
    return [f.stem.split("_", 1)[1] for f in files]


def top1(model, paths: list[Path], batch: int = 32) -> list[int]:
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            out += model.classify(preprocess([load_image(p) for p in paths[i : i + batch]])).argmax(-1).tolist()
    return out


def pool_label(path: Path) -> str:
    """The real label of a pool photo: its ImageNet class, Caltech-101 class or 'cc12m'."""
    parts = path.parts
    if "imagenet" in parts:
        return "imagenet:" + path.stem.split("_", 1)[1]
    if "caltech101" in parts:
        return "caltech:" + path.parent.name
    return "cc12m" if "cc12m" in parts else "?"


def stats(x) -> str:
    x = np.asarray(x, dtype=np.float64)
    return f"{x.mean():.3f} | {np.median(x):.3f} | {x.min():.3f} | {x.max():.3f}"


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--n-hard", type=int, default=100)
    args = ap.parse_args()
    data, bo = args.data, args.data / "yollava" / "bo"
    t0 = time.perf_counter()
    pool = ImagePool.build_or_update([data / "pool"], args.index_dir, progress=False)
    t_pool = time.perf_counter() - t0
    model = pool.embedder
    names = imagenet_names(data / "pool")

    photos = list_images(bo / "train")
    t0 = time.perf_counter()
    ts = build_training_set("bo", photos, pool, n_hard_negatives=args.n_hard, n_easy_negatives=100, conversations=False)
    t_build = time.perf_counter() - t0
    ours = [h.path for h in ts.hard_negatives]
    official_scores = json.loads((bo / "train_negatives" / "negative_example" / "scores.json").read_text())
    clip = {s["image"]: s["clip_score"] for s in official_scores}
    official = sorted((p for p in list_images(bo / "train_negatives" / "negative_example") if p.stem in clip),
                      key=lambda p: -clip[p.stem])
    official100 = official[:100]

    pos_vec, _, _ = pool.embed(photos)
    sets = {
        "ours: hard negatives (EfficientNet, local pool)": ours,
        "official: hard negatives, top 100 by CLIP": official100,
        "official: all 150 hard negatives": official,
        "official: 115 LAION easy negatives": list_images(bo / "train_negatives" / "laion"),
        "ours: 100 easy negatives (random pool)": ts.easy_negatives,
        "<bo> test photos (positives, reference)": list_images(bo / "test"),
    }
    vecs = {k: pool.embed(v)[0] for k, v in sets.items()}

    print("# Faithfulness of the training data for `<bo>` (issue 4)\n")
    print(f"Pool: {len(pool)} photos in {pool.index_dir} (opening/updating it took {t_pool:.1f} s); "
          f"build_training_set (10 photos, {args.n_hard} hard + 100 easy, no conversations): {t_build:.1f} s.")
    print(f"Our set: {ts.counts}; hard negatives per photo m = {ts.config['hard_per_positive']}; "
          f"near-duplicate threshold {ts.config['near_duplicate']}.\n")

    print("## 1. Similarity to the 10 `<bo>` training photos (EfficientNet-Lite0 cosine, one embedding for all)\n")
    print("| set | n | max-over-positives: mean | median | min | max | mean-over-positives: mean |")
    print("|---|---|---|---|---|---|---|")
    for k, v in vecs.items():
        sims = v @ pos_vec.T
        print(f"| {k} | {len(v)} | {stats(sims.max(1))} | {sims.mean(1).mean():.3f} |")
    off_max = (vecs["official: all 150 hard negatives"] @ pos_vec.T).max(1)
    rho = spearman(off_max, [clip[p.stem] for p in official])
    pool_max = (pool.vectors() @ pos_vec.T).max(1)
    thr = np.sort(pool_max)[::-1][len(ours) - 1]
    print(f"\nSpearman rank correlation, official negatives' CLIP score vs our EfficientNet similarity: {rho:.2f}.")
    print(f"Official hard negatives that would rank inside our top-{len(ours)} of the local pool "
          f"(max-sim >= {thr:.3f}): {(off_max >= thr).sum()} of {len(official)}.")

    # what the local pool offers: its dog photos (ImageNet dog classes, Caltech dalmatian)
    dog_names = {names[i] for i in CANINE}
    is_dog = np.array([pool_label(p).split(":")[-1] in dog_names or pool_label(p) == "caltech:dalmatian" for p in pool.paths])
    rank = np.empty(len(pool), int)
    rank[np.argsort(-pool_max)] = np.arange(len(pool))
    print(f"The local pool has {is_dog.sum()} dog/wolf/dingo photos (of {len(pool)}); their max-sim to `<bo>`: mean "
          f"{pool_max[is_dog].mean():.3f}, best {pool_max[is_dog].max():.3f}; {int((rank[is_dog] < len(ours)).sum())} of them "
          f"rank in the global top-{len(ours)}, {sum(pool_label(p).split(':')[-1] in dog_names for p in ours)} are among "
          "our hard negatives (top-m per photo).")

    # the same builder on the local pool plus the official LAION photos of <bo> (in memory, same embeddings)
    extra = official + sets["official: 115 LAION easy negatives"]
    ev = np.concatenate([vecs["official: all 150 hard negatives"], vecs["official: 115 LAION easy negatives"]])
    entries = pool.entries + [{"path": str(p), "size": 0, "mtime": 0, "sha256": file_sha256(p)} for p in extra]
    mixed = ImagePool(entries, np.concatenate([pool.vectors(), ev]), pool.index_dir, pool.embedder_id, model)
    ts2 = build_training_set("bo", photos, mixed, n_hard_negatives=args.n_hard, n_easy_negatives=0, conversations=False)
    off_hard, off_easy = {str(p) for p in official}, {str(p) for p in sets["official: 115 LAION easy negatives"]}
    top100 = {str(p) for p in official100}
    picked = [str(h.path) for h in ts2.hard_negatives]
    print(f"\nSame builder, pool = local pool + the 265 official LAION photos of `<bo>`: of our {len(picked)} hard "
          f"negatives, {sum(p in off_hard for p in picked)} are official hard negatives "
          f"({sum(p in top100 for p in picked)} of the official top 100), {sum(p in off_easy for p in picked)} official "
          f"LAION 'easy' negatives, {sum(p not in off_hard | off_easy for p in picked)} local; mean max-sim "
          f"{np.mean([h.score for h in ts2.hard_negatives]):.3f} (per-anchor score).")

    print("\n## 2. What the hard negatives are\n")
    labels = Counter(pool_label(p) for p in ours)
    print("Our hard negatives by their real pool label (top 15): " +
          ", ".join(f"{k} ×{n}" for k, n in labels.most_common(15)) + "\n")
    preds = {k: top1(model, sets[k]) for k in list(sets)[:5]}
    print("EfficientNet ImageNet top-1 of each set:\n")
    print("| set | domestic dog | dog, wolf or dingo | cat | distinct classes | most frequent top-1 classes |")
    print("|---|---|---|---|---|---|")
    for k, p in preds.items():
        n = len(p)
        dog, canine, cat = (sum(c in r for c in p) for r in (DOGS, CANINE, CATS))
        common = ", ".join(f"{names[c]} {m}" for c, m in Counter(p).most_common(6))
        print(f"| {k} | {dog / n:.0%} | {canine / n:.0%} | {cat / n:.0%} | {len(set(p))} | {common} |")
    a, b = set(preds[list(sets)[0]]), set(preds[list(sets)[1]])
    print(f"\nPredicted-class overlap, ours vs official top-100: Jaccard {len(a & b) / len(a | b):.2f} "
          f"({len(a & b)} shared classes of {len(a)} / {len(b)}); share of our hard negatives whose class occurs "
          f"among the official ones: {sum(c in b for c in preds[list(sets)[0]]) / len(ours):.0%}.")
    pos_pred = Counter(top1(model, photos))
    print("EfficientNet top-1 of the 10 `<bo>` photos themselves: " +
          ", ".join(f"{names[c]} {m}" for c, m in pos_pred.most_common()) + ".")

    print("\n## 3. Questions: ours vs the official training jsons\n")
    ident = "<bo>"
    ex = data / "yollava" / "annotations" / "example_training_data_jsons"
    conv_official = json.loads((ex / "bo" / "text-only-conversation.json").read_text())
    off_q = {t["Human"] for turns in conv_official.values() for t in turns}
    our_q = {replace_subject(q, ident) for q in conversation_questions("object")}
    print(f"Text-only conversation questions (bo, Table 19): official {len(off_q)} distinct over "
          f"{len(conv_official)} photos ({sum(map(len, conv_official.values()))} turns); ours {len(our_q)} per photo x "
          f"{len(photos)} photos. Identical questions: {len(off_q & our_q)} of {len(off_q)}.")
    if off_q - our_q:
        print("Official only: " + "; ".join(sorted(off_q - our_q)))
    if our_q - off_q:
        print("Ours only: " + "; ".join(sorted(our_q - off_q)))
    mam = json.loads((ex / "mam" / "text-only-conversation.json").read_text())
    mam_q = {re.sub("<mam>", ident, t["Human"]) for turns in mam.values() for t in turns}
    person_q = {replace_subject(q, ident) for q in conversation_questions("person")}
    print(f"\n`<mam>` (a cat) was trained on the person questions (Table 18): {len(mam_q & person_q)} of "
          f"{len(mam_q)} official questions are Table 18 verbatim; differing: "
          + "; ".join(sorted(mam_q - person_q)) + " (vs ours: " + "; ".join(sorted(person_q - mam_q)) + ").")
    print("Sample official answer: " + json.dumps(next(iter(conv_official.values()))[1]))

    t_pos, t_neg = {q for q, _ in positive_templates(ident)}, {q for q, _ in negative_templates(ident)}
    for label, fname, ours_q in [("positive", "recognition_positive.json", t_pos),
                                 ("negative (LAION)", "recognition_negative-laion.json", t_neg),
                                 ("negative (CC12M)", "recognition_negative-cc12m.json", t_neg)]:
        d = json.loads((ex / "bo" / fname).read_text())
        turns = [t for v in d.values() for t in v]
        qs = Counter(t["Human"] for t in turns)
        inside = sum(n for q, n in qs.items() if q in ours_q)
        print(f"\nOfficial {label} recognition ({fname}): {len(d)} photos, {len(turns)} turns, {len(qs)} distinct "
              f"questions; turns whose question is one of Table 16/17's: {inside} ({inside / len(turns):.0%}). "
              f"Most frequent: " + "; ".join(f"{q!r} ×{n}" for q, n in qs.most_common(3)))


if __name__ == "__main__":
    main()
