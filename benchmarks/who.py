"""Who is in this photo? Accuracy, scaling and time-to-recognition of ``yollava.who`` (issue #17).

Three parts, each resumable (everything expensive is cached in ``OUT/results.run/``):

- ``accuracy``: MyVLM (the evaluation's split: 4 training photos per subject, seed 0), every concept of
  ``--concepts`` loaded at once. Queries: the test photos of those subjects, and seeded two-subject
  collages (two test photos of different subjects side by side). For each mode (head, yollava, fused) and
  strategy (retrieve-then-verify with ``--top-k`` candidates, verify-all): top-1 accuracy on single-subject
  photos, and multi-label precision / recall / F1 of the set of concepts said present. The head mode is
  scored on every query; the language-model modes on ``--llm-photos`` test photos per subject and
  ``--llm-collages`` collages (each needs one LLM pass per concept; cached per (photo, concept)).
- ``scale``: 10, 100, 1,000 concepts: the real ones plus synthetic concepts whose prototypes and heads
  come from real pool photos (a random pool photo and its nearest neighbours as the "training photos").
  Recall of the true concept (its photo's subject) for both strategies, from the cached scores and the
  actual prototype index; end-to-end latency of ``YoLLaVA.who`` over that many concept files.
- ``chat``: "Who is in this photo?" with the concepts found introduced, vs the plain model.
- ``ready``: time from uploading 4 photos to the HTTP server until the job says "recognition ready"
  (photo checks, storing, fitting the concept head), cold (first job: pool and embedder load) and warm.

Concepts without a visual signature (made before it existed) get one here from their subject's
training photos (the same split), kept in the run folder: ``--concepts`` is only read.

    python benchmarks/who.py --concepts CONCEPTS_DIR --out benchmarks/results/who --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("who-bench")
MODES = ("head", "yollava", "fused")
STRATEGIES = ("retrieve", "all")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=Path, required=True, help="folder of NAME.json/NAME.safetensors (MyVLM subjects' concept names)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/who"))
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--parts", default="accuracy,scale,chat,ready")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--collages", type=int, default=40, help="two-subject collages scored by the head")
    ap.add_argument("--llm-photos", type=int, default=2, help="test photos per subject scored by the language model")
    ap.add_argument("--llm-collages", type=int, default=12, help="collages scored by the language model")
    ap.add_argument("--scale", default="10,100,1000")
    ap.add_argument("--latency-photos", type=int, default=3)
    ap.add_argument("--all-llm-max", type=int, default=100, help="verify-all latency in an LLM mode is measured up to this many concepts, estimated beyond")
    ap.add_argument("--budget", type=float, default=0.0, help="stop scoring with the language model after this many seconds (0: no limit); rerun to continue")
    ap.add_argument("--batch-size", type=int, default=8)
    return ap.parse_args(argv)


# ---- run folder --------------------------------------------------------------------------------------
class Run:
    def __init__(self, out: Path):
        self.dir = out / "results.run"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def jsonl(self, name: str) -> list[dict]:
        p = self.path(name)
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def append(self, name: str, rec: dict) -> None:
        with open(self.path(name), "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ---- setup -------------------------------------------------------------------------------------------
def setup(args):
    import torch

    torch.set_num_threads(args.threads)
    from yollava.data.pool import ImagePool
    from yollava.eval.datasets import load_myvlm
    from yollava.paths import default_data_root

    root = args.data_root or default_data_root()
    ds = load_myvlm(root, train_per_subject=4, seed=0)
    t0 = time.perf_counter()
    pool = ImagePool.build_or_update([root / "pool"], progress=False)
    log.info("pool: %d photos (%.1fs)", len(pool), time.perf_counter() - t0)
    return root, ds, pool


def load_engine(args, concepts_dir: Path):
    from yollava import YoLLaVA

    t0 = time.perf_counter()
    engine = YoLLaVA.from_pretrained(args.model, concepts_dir=concepts_dir)
    engine.adapter.use_exact_generation()  # an evaluation: its chat answers (resumed from chat.jsonl) stay fp32
    log.info("model %s loaded (%.1fs)", args.model, time.perf_counter() - t0)
    return engine


def real_concepts(args, engine, ds, pool, run: Run) -> dict:
    """name -> Concept (with a signature, computed from the split's training photos when the file has none)."""
    from yollava import who as W
    from yollava.concepts import load_concept

    embedder = pool.embedder
    eid = W.embedder_id(embedder)
    subjects = {s.concept: s for s in ds.subjects}
    out = {}
    sig_dir = run.path("signatures")
    for meta in sorted(args.concepts.glob("*.json")):
        name = meta.stem
        if name not in subjects:
            continue
        c = load_concept(args.concepts, name, engine.fingerprint()).to(device=engine.adapter.device, dtype=engine.adapter.dtype)
        for p in c.parameters():
            p.requires_grad_(False)
        sig = W.VisualSignature.from_concept(c)
        if sig is None or sig.embedder != eid:
            cache = sig_dir / f"{name}.json"
            if cache.exists():
                d = json.loads(cache.read_text())
                sig = W.VisualSignature(d["embedder"], np.array(d["prototype"], np.float32),
                                        W.ConceptHead(np.array(d["head_weight"], np.float32), d["head_bias"], d["head_threshold"],
                                                      d.get("head_info", {})), d["info"])
            else:
                sig = W.fit_signature(subjects[name].train, embedder, pool, seed=args.seed)
                sig_dir.mkdir(exist_ok=True)
                cache.write_text(json.dumps({"embedder": sig.embedder, "prototype": sig.prototype.tolist(), "head_weight": sig.head.weight.tolist(),
                                             "head_bias": sig.head.bias, "head_threshold": sig.head.threshold, "head_info": sig.head.info,
                                             "info": sig.info}))
            W.attach_signature(c, sig)
            c.meta["stage"] = "trained"
        out[name] = c
    return out


def make_collages(ds, names: list[str], n: int, seed: int, folder: Path) -> list[dict]:
    """Seeded pairs of test photos of two different subjects, side by side at the same height."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:collages")
    subjects = {s.concept: s for s in ds.subjects if s.concept in names}
    out = []
    keys = sorted(subjects)
    for i in range(n):
        a, b = rng.sample(keys, 2)
        pa, pb = rng.choice(subjects[a].test), rng.choice(subjects[b].test)
        key = f"collage:{pa.stem}+{pb.stem}"  # by content: caches stay right when the set of concepts changes
        path = folder / f"{pa.stem}+{pb.stem}.jpg"
        if not path.exists():
            ims = [Image.open(p).convert("RGB") for p in (pa, pb)]
            h = 336
            ims = [im.resize((max(1, round(im.width * h / im.height)), h)) for im in ims]
            canvas = Image.new("RGB", (sum(im.width for im in ims), h))
            canvas.paste(ims[0], (0, 0))
            canvas.paste(ims[1], (ims[0].width, 0))
            canvas.save(path, quality=90)
        out.append({"key": key, "path": str(path), "truth": sorted([a, b]), "parts": [str(pa), str(pb)]})
    return out


def queries(args, ds, names, run: Run) -> tuple[list[dict], list[dict]]:
    """(single-subject test photos, collages); each has ``llm`` True when the language model scores it."""
    singles = []
    for s in ds.subjects:
        if s.concept not in names:
            continue
        rng = random.Random(f"{args.seed}:llm-photos:{s.name}")  # per subject: the same photos whichever others are there
        chosen = set(rng.sample(range(len(s.test)), min(args.llm_photos, len(s.test))))
        for i, p in enumerate(s.test):
            singles.append({"key": f"{s.name}/{p.name}", "path": str(p), "truth": [s.concept], "llm": i in chosen})
    collages = make_collages(ds, names, args.collages, args.seed, run.path("collages"))
    for i, c in enumerate(collages):
        c["llm"] = i < args.llm_collages
    return singles, collages


def features(pool, items: list[dict], run: Run) -> dict[str, np.ndarray]:
    from yollava import who as W

    cache = run.path("query_views.npz")  # each query photo's views (yollava.who.query_views), as who() sees it
    have = dict(np.load(cache)) if cache.exists() else {}
    missing = [q for q in items if q["key"] not in have]
    if missing:
        t0 = time.perf_counter()
        for q in missing:
            have[q["key"]] = W.embed_query(pool.embedder, q["path"])
        np.savez(cache, **have)
        log.info("embedded %d query photos (%.1fs)", len(missing), time.perf_counter() - t0)
    return have


def llm_scores(args, engine, concepts: dict, items: list[dict], run: Run) -> dict[tuple[str, str], float]:
    """P(yes) of every concept on every ``llm`` query, cached per (query, concept); honours ``--budget``."""
    from yollava import who as W

    done = {(r["key"], r["concept"]): r["p_yes"] for r in run.jsonl("llm_scores.jsonl")}
    todo = [q for q in items if q["llm"] and any((q["key"], n) not in done for n in concepts)]
    t_start = time.perf_counter()
    for q in todo:
        if args.budget and time.perf_counter() - t_start > args.budget:
            log.warning("LLM budget of %.0fs used; %d queries left for the next run", args.budget, len(todo) - todo.index(q))
            break
        names = [n for n in concepts if (q["key"], n) not in done]
        t0 = time.perf_counter()
        image = engine.encode_image(q["path"])
        cache: dict = {}
        probs = []
        for i in range(0, len(names), args.batch_size):
            chunk = names[i : i + args.batch_size]
            with W.concepts_loaded(engine, [concepts[n] for n in chunk]):
                probs += engine.concept_yes_probabilities(image, chunk, batch_size=args.batch_size, prefix_cache=cache)
        dt = time.perf_counter() - t0
        for n, p in zip(names, probs):
            done[(q["key"], n)] = p
            run.append("llm_scores.jsonl", {"key": q["key"], "concept": n, "p_yes": p})
        run.append("llm_timing.jsonl", {"key": q["key"], "n_concepts": len(names), "seconds": dt})
        log.info("LLM %s: %d concepts in %.1fs", q["key"], len(names), dt)
    return done


# ---- scoring (offline, the same rules as yollava.who) ------------------------------------------------
def score(mode: str, name: str, concept, x: np.ndarray, p_llm: float | None) -> tuple[float, float]:
    from yollava import who as W

    sig = W.VisualSignature.from_concept(concept)
    if mode == "head":
        return sig.photo_probability(x), sig.head.threshold
    if mode == "yollava":
        return p_llm, concept.threshold
    return W.fuse(sig.photo_probability(x), sig.head.threshold, p_llm, concept.threshold)


def concept_index(concepts: dict, embedder_id: str):
    """The product's index (prototypes + heads in FAISS) over in-memory concepts."""
    from yollava import who as W

    index = W.ConceptIndex(embedder_id, loader=None)
    index.sync(dict(concepts))
    return index


def predict(mode, strategy, q, concepts, index, feats, llm, top_k):
    """(verified candidates best first [(name, margin, present)], retrieved names) for one query."""
    from yollava import who as W

    x = feats[q["key"]]
    names = list(concepts)
    retrieved = [n for n, _ in index.retrieve(x, top_k)]
    cands = retrieved if strategy == "retrieve" else names
    out = []
    for n in cands:
        p, t = score(mode, n, concepts[n], x, llm.get((q["key"], n)))
        out.append((n, W.margin(p, t), p >= t))
    out.sort(key=lambda r: (-r[1], r[0]))
    return out, retrieved


def prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def accuracy_metrics(mode, strategy, items, concepts, index, feats, llm, top_k, llm_queries_only: bool = False):
    stats = {"singles": [0, 0, 0], "collages": [0, 0, 0]}
    top1, n_single, both, n_coll, hit, n_truth = 0, 0, 0, 0, 0, 0
    for q in items:
        if (mode != "head" or llm_queries_only) and (not q["llm"] or any((q["key"], n) not in llm for n in concepts)):
            continue  # the language model has not scored this query for every concept (yet)
        ranked, retrieved = predict(mode, strategy, q, concepts, index, feats, llm, top_k)
        pred = {n for n, _, present in ranked if present}
        truth = set(q["truth"])
        kind = "collages" if q["key"].startswith("collage") else "singles"
        s = stats[kind]
        s[0] += len(pred & truth)
        s[1] += len(pred - truth)
        s[2] += len(truth - pred)
        hit += len(truth & set(retrieved))
        n_truth += len(truth)
        if kind == "singles":
            n_single += 1
            top1 += bool(ranked) and ranked[0][0] in truth
        else:
            n_coll += 1
            both += truth <= pred
    allc = [a + b for a, b in zip(stats["singles"], stats["collages"])]
    return {"mode": mode + (" (same queries as the LLM modes)" if llm_queries_only and mode == "head" else ""), "strategy": strategy,
            "n_single": n_single, "n_collage": n_coll,
            "top1": round(top1 / n_single, 4) if n_single else None,
            "singles": prf(*stats["singles"]), "collages": prf(*stats["collages"]), "all": prf(*allc),
            "collage_both_found": round(both / n_coll, 4) if n_coll else None,
            "retrieval_recall_at_k": round(hit / n_truth, 4) if n_truth else None}


# ---- synthetic concepts ---------------------------------------------------------------------------------
def synthetic(args, pool, n: int, run: Run, placeholder) -> dict:
    """``n`` synthetic concepts: a seeded random pool photo and its 3 nearest pool neighbours are the
    "training photos"; the prototype and head are fitted on their (real) features against the rest of the pool."""
    from yollava import who as W
    from yollava.calibration import HEAD_THRESHOLD
    from yollava.concepts import Concept

    cache = run.path("synthetic.npz")
    have = dict(np.load(cache, allow_pickle=False)) if cache.exists() else {}
    rng = random.Random(f"{args.seed}:synthetic")
    rows = {e["path"]: i for i, e in enumerate(pool.entries)}
    vectors = pool.vectors()
    anchors = rng.sample(range(len(pool)), n)
    out, changed, t0 = {}, False, time.perf_counter()
    for j, a in enumerate(anchors):
        name = f"syn{j:04d}"
        if f"{name}.proto" not in have:
            hits = pool.search(vectors[a], 4)[0]
            idx = [rows[str(p)] for p, _ in hits]
            sig = W.fit_signature([p for p, _ in hits], pool.embedder, pool, seed=j, features=vectors[idx])
            have[f"{name}.proto"], have[f"{name}.w"], have[f"{name}.b"] = sig.prototype, sig.head.weight, np.array([sig.head.bias], np.float32)
            changed = True
        head = W.ConceptHead(have[f"{name}.w"], float(have[f"{name}.b"][0]), HEAD_THRESHOLD, {"kind": "logistic", "synthetic": True})
        sig = W.VisualSignature(W.embedder_id(pool.embedder), have[f"{name}.proto"], head, {"photos": 4})
        c = Concept(name, placeholder[0], placeholder[1], {"stage": "trained", "recognition_threshold": 0.5})
        out[name] = W.attach_signature(c, sig)
    if changed:
        np.savez(cache, **have)
        log.info("synthetic concepts: %d fitted (%.1fs)", n, time.perf_counter() - t0)
    return out


# ---- parts ------------------------------------------------------------------------------------------------
def part_accuracy(args, engine, concepts, singles, collages, feats, llm, eid):
    items = singles + collages
    index = concept_index(concepts, eid)
    rows = [accuracy_metrics(m, s, items, concepts, index, feats, llm, args.top_k) for m in MODES for s in STRATEGIES]
    rows[2:2] = [accuracy_metrics("head", s, items, concepts, index, feats, llm, args.top_k, llm_queries_only=True) for s in STRATEGIES]
    timing = [r for r in Run(args.out).jsonl("llm_timing.jsonl") if r["n_concepts"] == len(concepts)]
    per_concept = float(np.median([r["seconds"] / r["n_concepts"] for r in timing])) if timing else None
    return {"n_concepts": len(concepts), "concepts": sorted(concepts), "top_k": args.top_k,
            "queries": {"singles": len(singles), "collages": len(collages), "llm_singles": sum(q["llm"] for q in singles),
                        "llm_collages": sum(q["llm"] for q in collages)},
            "rows": rows, "llm_seconds_per_concept": per_concept}


def part_scale(args, engine, real, singles, feats, llm, pool, run: Run):
    from yollava import who as W
    from yollava.concepts import save_concept

    ns = [int(x) for x in args.scale.split(",") if x]
    order = sorted(real)
    random.Random(f"{args.seed}:scale").shuffle(order)
    first = next(iter(real.values()))
    placeholder = (first.input_rows.detach().float().cpu(), first.output_row.detach().float().cpu())
    syn = synthetic(args, pool, max(0, max(ns) - min(len(real), max(ns))), run, placeholder)
    syn_names = list(syn)
    rows = []
    lat_done = {(r["n"], r["mode"], r["strategy"], r["key"]): r for r in run.jsonl("latency.jsonl")}
    for n in ns:
        chosen_real = order[: min(n, len(order))]
        chosen = {k: real[k] for k in chosen_real} | {k: syn[k] for k in syn_names[: n - len(chosen_real)]}
        index = concept_index(chosen, W.embedder_id(pool.embedder))
        qs = [q for q in singles if q["llm"] and q["truth"][0] in chosen]
        cand_sizes = []
        for mode in ("head", "yollava"):
            for strategy in STRATEGIES:
                found = total = 0
                for q in qs:
                    if mode == "yollava" and (q["key"], q["truth"][0]) not in llm:
                        continue
                    truth = q["truth"][0]
                    x = feats[q["key"]]
                    if strategy == "retrieve":
                        cands = [k for k, _ in index.retrieve(x, args.top_k)]
                        cand_sizes.append(len(cands))
                        if truth not in cands:
                            total += 1
                            continue
                    p, t = score(mode, truth, chosen[truth], x, llm.get((q["key"], truth)))
                    found += p >= t
                    total += 1
                rows.append({"n": n, "n_real": len(chosen_real), "mode": mode, "strategy": strategy, "queries": total,
                             "recall": round(found / total, 4) if total else None,
                             "candidates": round(float(np.mean(cand_sizes)), 2) if strategy == "retrieve" and cand_sizes else n})
                cand_sizes = []
        # end to end: YoLLaVA.who over n concept files
        folder = Path(tempfile.mkdtemp(prefix=f"who-scale-{n}-"))
        try:
            t0 = time.perf_counter()
            for k, c in chosen.items():
                save_concept(c, folder, engine.fingerprint())
            write_s = time.perf_counter() - t0
            engine.concepts_dir = folder
            W.set_embedder(engine, pool.embedder)
            t0 = time.perf_counter()
            W.index_for(engine).sync(W.library_sources(engine))
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            W.index_for(engine).sync(W.library_sources(engine))
            warm = time.perf_counter() - t0
            rows.append({"n": n, "index_cold_seconds": round(cold, 3), "index_warm_seconds": round(warm, 4), "write_seconds": round(write_s, 2)})
            lat_qs = qs[: args.latency_photos]
            for mode in ("head", "yollava"):
                for strategy in STRATEGIES:
                    if strategy == "all" and mode == "yollava" and n > args.all_llm_max:
                        continue  # estimated below from the measured cost per concept
                    for q in (lat_qs if not (strategy == "all" and mode == "yollava" and n > 10) else lat_qs[:1]):
                        key = (n, mode, strategy, q["key"])
                        if key in lat_done:
                            continue
                        from PIL import Image

                        with Image.open(q["path"]) as im:  # a decoded photo: nothing cached from an earlier call
                            image = im.convert("RGB")
                        r = engine.who(image, mode=mode, strategy=strategy, top_k=args.top_k)
                        rec = {"n": n, "mode": mode, "strategy": strategy, "key": q["key"], "seconds": r.seconds,
                               "checked": len(r.checked), "found": r.names, "truth": q["truth"]}
                        run.append("latency.jsonl", rec)
                        lat_done[key] = rec
                        log.info("who n=%d %s/%s: %.2fs (%d checked)", n, mode, strategy, r.seconds["total"], len(r.checked))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "latency": list(lat_done.values())}


def part_chat(args, engine, concepts: dict, singles: list[dict], pool, run: Run) -> dict:
    """"Who is in this photo?" on one test photo per subject, every concept loaded: the answer with the
    concepts found introduced (``yollava.who.chat``) vs the plain model; does it name the subject?"""
    from yollava import who as W

    done = {r["key"]: r for r in run.jsonl("chat.jsonl")}
    folder = Path(tempfile.mkdtemp(prefix="who-chat-"))
    try:
        from yollava.concepts import save_concept

        for c in concepts.values():
            save_concept(c, folder, engine.fingerprint())
        engine.concepts_dir = folder
        W.set_embedder(engine, pool.embedder)
        seen = set()
        for q in singles:
            subject = q["truth"][0]
            if subject in seen:
                continue
            seen.add(subject)
            if q["key"] in done:
                continue
            t0 = time.perf_counter()
            out = W.chat(engine, "Who is in this photo?", q["path"], max_new_tokens=24)
            t1 = time.perf_counter()
            plain = engine.chat("Who is in this photo?", image=q["path"], max_new_tokens=24)
            rec = {"key": q["key"], "truth": subject, "found": [f.concept for f in out.found], "answer": out.answer,
                   "names_subject": f"<{subject}>" in out.answer, "plain_answer": plain,
                   "plain_names_subject": subject.replace("_", " ") in plain.lower(), "seconds": round(t1 - t0, 2)}
            run.append("chat.jsonl", rec)
            done[q["key"]] = rec
            log.info("chat %s: found %s -> %r", subject, rec["found"], out.answer[:60])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    recs = list(done.values())
    n = len(recs)
    return {"photos": n, "found_true": sum(r["truth"] in r["found"] for r in recs), "found_true_first": sum(r["found"][:1] == [r["truth"]] for r in recs),
            "answer_names_subject": sum(r["names_subject"] for r in recs), "plain_names_subject": sum(r["plain_names_subject"] for r in recs),
            "median_seconds": float(np.median([r["seconds"] for r in recs])) if recs else None, "examples": recs[:6]}


def part_ready(args, engine, ds, run: Run):
    """Upload 4 photos to a real HTTP server; time until the job reports recognition ready (twice: cold, warm)."""
    import httpx

    from yollava.serve import ServerConfig, create_app
    from yollava.serve.testing import ServerThread

    done = run.jsonl("ready.jsonl")
    if len(done) >= 2:
        return done
    home = Path(tempfile.mkdtemp(prefix="who-ready-"))
    try:
        app = create_app(ServerConfig(model=args.model, home=home), engine)
        db = app.state.server.db
        h = {"Authorization": f"Bearer {db.new_key(db.add_user('bench'))}"}
        out, jobs = [], []
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
            for attempt, subject in enumerate(ds.subjects[:2]):
                files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in subject.train[:4]]
                t0 = time.perf_counter()
                r = client.post("/v1/concepts", headers=h, data={"name": subject.concept}, files=files)
                r.raise_for_status()
                job = r.json()
                t_upload = time.perf_counter() - t0
                while not job["recognition_ready"]:
                    if time.perf_counter() - t0 > 300:
                        raise RuntimeError(f"no recognition ready after 300 s: {job}")
                    time.sleep(0.05)
                    job = client.get(f"/v1/jobs/{job['id']}", headers=h).json()
                t_ready = time.perf_counter() - t0
                photo = subject.test[0]
                import base64

                url = "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode()
                t1 = time.perf_counter()
                who = client.post("/v1/recognize", headers=h, json={"image": url}).json()
                t_who = time.perf_counter() - t1
                jobs.append(job["id"])  # left training: the next upload is made while this job trains
                rec = {"attempt": "cold" if attempt == 0 else "warm, while the first job trains", "subject": subject.name, "photos": 4,
                       "upload_seconds": round(t_upload, 3), "recognition_ready_seconds": round(t_ready, 3),
                       "server_recognition_ready_seconds": job.get("recognition_ready_seconds"),
                       "who_seconds": round(t_who, 3), "who_found": [x["concept"] for x in who.get("results", [])],
                       "who_modes": sorted({x["mode"] for x in who.get("results", [])}), "status_then": job["status"], "phase_then": job["phase"]}
                run.append("ready.jsonl", rec)
                out.append(rec)
                log.info("recognition ready (%s): %.2fs", rec["attempt"], t_ready)
            for job_id in jobs:  # no need to train them here
                client.delete(f"/v1/jobs/{job_id}", headers=h)
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---- report -----------------------------------------------------------------------------------------------
def write_report(args, result: dict) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    lines = ["# Who is in this photo? (`benchmarks/who.py`)", "", f"Command: `{result['command']}`", "",
             f"Model `{args.model}`, {args.threads} thread(s); load average at the start {result['loadavg_start']}, at the end {result['loadavg_end']}.", ""]
    acc = result.get("accuracy")
    if acc:
        q = acc["queries"]
        lines += [f"## Accuracy: MyVLM, {acc['n_concepts']} concepts loaded", "",
                  f"Queries: {q['singles']} single-subject test photos and {q['collages']} two-subject collages for the head; "
                  f"{q['llm_singles']} photos and {q['llm_collages']} collages for the language-model modes. "
                  f"Retrieve-then-verify verifies the union of the top {acc['top_k']} prototypes and the top {acc['top_k']} heads "
                  "(verify-all: every concept; its candidates are all concepts).", "",
                  "| mode | strategy | photos / collages | top-1 (singles) | P | R | F1 (singles) | P | R | F1 (collages) | both found (collages) | F1 (all) | true concept among candidates |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in acc["rows"]:
            s, c, a = r["singles"], r["collages"], r["all"]
            lines.append(f"| {r['mode']} | {r['strategy']} | {r['n_single']} / {r['n_collage']} | {r['top1']} | {s['precision']} | {s['recall']} | {s['f1']} | "
                         f"{c['precision']} | {c['recall']} | {c['f1']} | {r['collage_both_found']} | {a['f1']} | {r['retrieval_recall_at_k']} |")
        if acc.get("llm_seconds_per_concept"):
            lines += ["", f"Language-model verification: {acc['llm_seconds_per_concept']:.3f} s per concept per photo (median, batched, prefix reused)."]
        lines.append("")
    sc = result.get("scale")
    if sc:
        lines += ["## Scaling with the number of concepts", "",
                  "| concepts (real) | mode | strategy | recall of the true concept | queries | concepts verified (mean) |", "|---|---|---|---:|---:|---:|"]
        for r in sc["rows"]:
            if "recall" in r:
                lines.append(f"| {r['n']} ({r['n_real']}) | {r['mode']} | {r['strategy']} | {r['recall']} | {r['queries']} | {r['candidates']} |")
        lines += ["", "| concepts | mode | strategy | median seconds per photo | checked | measured photos |", "|---|---|---|---:|---:|---:|"]
        for n, mode, strategy, med, checked, k, est in sc.get("latency_table", []):
            lines.append(f"| {n} | {mode} | {strategy} | {med:.2f}{' (estimated)' if est else ''} | {checked} | {k} |")
        idx = [r for r in sc["rows"] if "index_cold_seconds" in r]
        if idx:
            lines += ["", "Index sync over the concept files (read + check every file once, then a `stat` per file): " +
                      ", ".join(f"{r['n']}: {r['index_cold_seconds']:.2f} s cold / {r['index_warm_seconds'] * 1000:.0f} ms warm" for r in idx) + "."]
        lines.append("")
    ch = result.get("chat")
    if ch:
        lines += ["## Chat that knows who is there", "",
                  f"\"Who is in this photo?\" on one test photo per subject, every concept available ({ch['photos']} photos): the true "
                  f"concept was found in {ch['found_true']} ({ch['found_true_first']} ranked first); the answer named it by its identifier in "
                  f"{ch['answer_names_subject']}; the plain model (no concept introduced) named the subject in {ch['plain_names_subject']}. "
                  f"Median {ch['median_seconds']:.1f} s per answer (who + 24 tokens).", "", "| subject | found | answer | plain model |", "|---|---|---|---|"]
        for r in ch["examples"]:
            def code(text, n):
                return "`" + text.replace("`", "'").replace("|", "/").replace("\n", " ")[:n] + "`"

            lines.append(f"| {r['truth']} | {' '.join(r['found']) or '-'} | {code(r['answer'], 90)} | {code(r['plain_answer'], 60)} |")
        lines.append("")
    rd = result.get("ready")
    if rd:
        lines += ["## Time to recognition ready (HTTP upload of 4 photos → job says recognition ready)", "",
                  "| run | seconds (client) | seconds (server: created → head stored) | upload request | who-is-here right after | found | mode |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for r in rd:
            lines.append(f"| {r['attempt']} | {r['recognition_ready_seconds']:.2f} | {r['server_recognition_ready_seconds']} | {r['upload_seconds']:.2f} | "
                         f"{r['who_seconds']:.2f} | {' '.join(r['who_found']) or '-'} | {' '.join(r['who_modes'])} |")
        lines.append("")
    if sc and sc.get("latency_table"):
        plot_scale(sc, out / "results.png")
        lines += ["![latency and recall vs number of concepts](results.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


def plot_scale(sc: dict, path: Path) -> None:
    """Latency (log-log) and recall of the true concept vs the number of concepts, per mode and strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, colour in (("head", "tab:green"), ("yollava", "tab:blue")):
        for strategy, style in (("retrieve", "-o"), ("all", "--s")):
            pts = [(r[0], r[3], r[6]) for r in sc["latency_table"] if r[1] == mode and r[2] == strategy]
            if pts:
                a.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, label=f"{mode}, {'retrieve-then-verify' if strategy == 'retrieve' else 'verify-all'}")
                for n, t, est in pts:
                    if est:
                        a.annotate("est.", (n, t), fontsize=7)
            rec = [(r["n"], r["recall"]) for r in sc["rows"] if r.get("mode") == mode and r.get("strategy") == strategy and r.get("recall") is not None]
            if rec:
                b.plot([p[0] for p in rec], [p[1] for p in rec], style, color=colour, label=f"{mode}, {strategy}")
    a.axhline(3.0, color="grey", lw=0.8, ls=":")
    a.set(xscale="log", yscale="log", xlabel="concepts", ylabel="seconds per photo", title="who is here: latency")
    b.set(xscale="log", ylim=(0, 1), xlabel="concepts", ylabel="recall of the true concept", title="recall")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_table(lat: list[dict], ns: list[int], per_concept: float | None, embed_s: float | None, all_llm_max: int):
    rows = []
    for n in ns:
        for mode in ("head", "yollava"):
            for strategy in STRATEGIES:
                recs = [r for r in lat if r["n"] == n and r["mode"] == mode and r["strategy"] == strategy]
                if recs:
                    rows.append((n, mode, strategy, float(np.median([r["seconds"]["total"] for r in recs])),
                                 int(np.median([r["checked"] for r in recs])), len(recs), False))
                elif mode == "yollava" and strategy == "all" and per_concept and n > all_llm_max:
                    rows.append((n, mode, strategy, (embed_s or 0.0) + n * per_concept, n, 0, True))
    return rows


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    parts = set(args.parts.split(","))
    run = Run(args.out)
    loadavg_start = os.getloadavg()
    root, ds, pool = setup(args)
    engine = load_engine(args, Path(tempfile.mkdtemp(prefix="who-empty-")))
    from yollava import who as W

    W.set_embedder(engine, pool.embedder)
    result = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]), "args": {k: str(v) for k, v in vars(args).items()}}
    prev = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    concepts = real_concepts(args, engine, ds, pool, run)
    log.info("%d real concepts from %s", len(concepts), args.concepts)
    singles, collages = queries(args, ds, set(concepts), run) if concepts else ([], [])
    feats = features(pool, singles + collages, run)
    llm = llm_scores(args, engine, concepts, singles + collages, run) if ("accuracy" in parts or "scale" in parts) else {}
    if "accuracy" in parts and concepts:
        result["accuracy"] = part_accuracy(args, engine, concepts, singles, collages, feats, llm, W.embedder_id(pool.embedder))
    elif prev.get("accuracy"):
        result["accuracy"] = prev["accuracy"]
    if "scale" in parts and concepts:
        sc = part_scale(args, engine, concepts, singles, feats, llm, pool, run)
        per_concept = (result.get("accuracy") or {}).get("llm_seconds_per_concept")
        embeds = [r["seconds"]["embed"] for r in sc["latency"]]
        sc["latency_table"] = latency_table(sc["latency"], [int(x) for x in args.scale.split(",")], per_concept,
                                            float(np.median(embeds)) if embeds else None, args.all_llm_max)
        result["scale"] = sc
    elif prev.get("scale"):
        result["scale"] = prev["scale"]
    if "chat" in parts and concepts:
        result["chat"] = part_chat(args, engine, concepts, singles, pool, run)
    elif prev.get("chat"):
        result["chat"] = prev["chat"]
    if "ready" in parts:
        result["ready"] = part_ready(args, engine, ds, run)
    elif prev.get("ready"):
        result["ready"] = prev["ready"]
    result["loadavg_start"] = [round(x, 2) for x in loadavg_start]
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_report(args, result)
    log.info("wrote %s", args.out / "results.md")


if __name__ == "__main__":
    main()
