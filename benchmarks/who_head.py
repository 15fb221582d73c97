"""Choosing the concept head's recipe for "who is here" on a development split (no language model).

Each variant is scored looking at each query photo whole ("photo") and in the product's views
("multi-crop": the photo, edge-to-edge squares of a wide photo, four corners; a head answers with its
best view).

For every MyVLM subject, a head is fitted on its training photos of the split ``--split-seed`` (default 1,
NOT the evaluation's seed 0) with each variant, then all heads answer every test photo of that split and
seeded two-subject collages. Reports top-1, multi-label precision/recall/F1 and the fitting time, plus
the retrieval recall@k of the prototypes among the subjects and among ``--distractors`` synthetic
concepts made from pool photos. The variant chosen here is the default of ``yollava.who.fit_signature``
as the product calls it; ``benchmarks/who.py`` then reports it on the evaluation split.

    python benchmarks/who_head.py --out benchmarks/results/who/head_dev.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from who import make_collages, prf  # noqa: E402

VARIANTS = {
    "photos": {"views": 0},
    "views3": {"views": 3},
    "composites2": {"views": 0, "composites": 2},
    "views3+composites2": {"views": 3, "composites": 2},
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/who/head_dev.json"))
    ap.add_argument("--split-seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--collages", type=int, default=40)
    ap.add_argument("--distractors", type=int, default=971)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from yollava import who as W
    from yollava.data.pool import ImagePool
    from yollava.eval.datasets import load_myvlm
    from yollava.paths import default_data_root

    root = default_data_root()
    ds = load_myvlm(root, train_per_subject=4, seed=args.split_seed)
    pool = ImagePool.build_or_update([root / "pool"], progress=False)
    emb = pool.embedder
    names = [s.concept for s in ds.subjects]
    tmp = args.out.parent / "head_dev.run"
    collages = make_collages(ds, names, args.collages, args.split_seed, tmp / "collages")
    queries = [{"path": str(p), "truth": {s.concept}, "kind": "single"} for s in ds.subjects for p in s.test]
    queries += [{"path": c["path"], "truth": set(c["truth"]), "kind": "collage"} for c in collages]
    xq = W.embed_images(emb, [q["path"] for q in queries])
    views = [W.embed_query(emb, q["path"]) for q in queries]  # the product's query views (yollava.who.query_views)
    # distractor prototypes: a random pool photo and its 3 nearest neighbours
    rng = random.Random("distractors")
    vec = pool.vectors()
    anchors = rng.sample(range(len(pool)), args.distractors)
    protos = []
    for a in anchors:
        nn = np.argsort(-(vec @ vec[a]))[:4]
        m = vec[nn].mean(0)
        protos.append(m / np.linalg.norm(m))
    distract = np.stack(protos) if protos else np.zeros((0, vec.shape[1]), np.float32)

    results = {}
    for vname, inference in [(v, i) for v in args.variants.split(",") for i in ("photo", "multi-crop")]:
        opts = VARIANTS[vname]
        t0 = time.perf_counter()
        sigs, fit_s = {}, []
        for s in ds.subjects:
            t1 = time.perf_counter()
            sigs[s.concept] = W.fit_signature(s.train, emb, pool, seed=0, **opts)
            fit_s.append(time.perf_counter() - t1)
        if inference == "photo":
            P = np.stack([sigs[n].head.probability(xq) for n in names], 1)  # (queries, subjects)
        else:
            P = np.array([[sigs[n].photo_probability(v) for n in names] for v in views])
        T = np.array([sigs[n].head.threshold for n in names])
        margin = np.log(np.clip(P, 1e-6, 1 - 1e-6) / np.clip(1 - P, 1e-6, 1)) - np.log(T / (1 - T))
        stats = {"single": [0, 0, 0], "collage": [0, 0, 0]}
        top1 = n1 = both = nc = 0
        for i, q in enumerate(queries):
            pred = {names[j] for j in np.nonzero(P[i] >= T)[0]}
            s = stats[q["kind"]]
            s[0] += len(pred & q["truth"]); s[1] += len(pred - q["truth"]); s[2] += len(q["truth"] - pred)
            if q["kind"] == "single":
                n1 += 1
                top1 += names[int(np.argmax(margin[i]))] in q["truth"]
            else:
                nc += 1
                both += q["truth"] <= pred
        sweep = {}
        for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            st = [0, 0, 0]
            for i, q in enumerate(queries):
                pred = {names[j] for j in np.nonzero(P[i] >= t)[0]}
                st[0] += len(pred & q["truth"]); st[1] += len(pred - q["truth"]); st[2] += len(q["truth"] - pred)
            sweep[str(t)] = prf(*st)
        # retrieval: prototypes of the subjects (+ distractors)
        protos = np.stack([sigs[n].prototype for n in names])
        rec = {}
        for label, bank in (("subjects", protos), ("with_distractors", np.concatenate([protos, distract]))):
            sims = xq @ bank.T
            top = np.argsort(-sims, axis=1)[:, : args.top_k]
            hit = tot = 0
            for i, q in enumerate(queries):
                got = {names[j] for j in top[i] if j < len(names)}
                hit += len(q["truth"] & got)
                tot += len(q["truth"])
            rec[label] = round(hit / tot, 4)
        vname = f"{vname}, {inference}"
        results[vname] = {"options": opts, "inference": inference, "top1": round(top1 / n1, 4), "singles": prf(*stats["single"]),
                          "collages": prf(*stats["collage"]), "collage_both_found": round(both / nc, 4),
                          "all": prf(*[a + b for a, b in zip(stats["single"], stats["collage"])]),
                          "fit_seconds_median": round(float(np.median(fit_s)), 3), "prototype_recall_at_k": rec,
                          "threshold_sweep_all": sweep,
                          "seconds": round(time.perf_counter() - t0, 1)}
        print(vname, json.dumps(results[vname]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"split_seed": args.split_seed, "subjects": len(names), "queries": len(queries),
                                    "collages": len(collages), "top_k": args.top_k, "distractors": args.distractors,
                                    "command": "python " + " ".join(sys.argv), "variants": results}, indent=1))


if __name__ == "__main__":
    main()
