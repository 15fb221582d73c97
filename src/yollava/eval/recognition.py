"""Recognition benchmark: "Can you see if <sks> is in this photo?" for every method, same photos, one table.

Per (method, subject) the yes-probability of every test photo is recorded (one JSONL line, appended
as soon as it is done; a resumed run skips finished pairs). Metrics (paper §5.1): positive accuracy,
negative accuracy, weighted accuracy ``0.5·pos + 0.5·neg`` and the yes-probability ROC-AUC.
Decision threshold: the concept's calibrated one for Yo'LLaVA (set on its held-back training slice),
0.5 for everything else (for the prompting baselines that is the model's own Yes/No decision,
P(yes) > P(no)).

Overall numbers pool all subjects' test photos as the paper does (333 positives, 13,320 negatives):
accuracy over all positives, over all negatives, weighted = their mean; AUC is the mean of the
per-subject AUCs (scores of different concepts are not on one scale).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..engine import RECOGNITION_QUERY, YoLLaVA
from ..personalize import DataConfig
from ..train import TrainConfig, recognition_metrics
from .datasets import RecognitionDataset, hold_out_pool_negatives
from .methods import EvalContext, Unavailable, make_method
from .store import RunStore

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


def _rel(p: Path, root: Path | None) -> str:
    try:
        return str(Path(p).relative_to(root)) if root else str(p)
    except ValueError:
        return str(p)


def run_recognition(
    engine: YoLLaVA,
    dataset: RecognitionDataset,
    methods: list[str],
    run_dir: str | Path,
    *,
    subjects: list[str] | None = None,
    max_subjects: int | None = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    recipe: str = "fast",
    pool_fn: Callable[[], Any] | None = None,
    pool_negatives: int = 0,
    pool_hard_negatives: int = 0,
    max_negatives: int | None = None,
    seed: int = 0,
    data_root: Path | None = None,
    protocol_extra: dict | None = None,
    caption_tokens: int = 96,
    summary_tokens: int = 48,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    reuse_from: list[Path] | None = None,
) -> dict:
    """Run (or resume) the benchmark; returns the aggregated results (see :func:`aggregate`)."""
    train, data = train or TrainConfig(), data or DataConfig()
    chosen = dataset.select(subjects, max_subjects)
    protocol = {
        "task": "recognition", "version": PROTOCOL_VERSION, "dataset": dataset.name, "seed": seed,
        "split": dataset.split(), "query": RECOGNITION_QUERY, "model": engine.fingerprint(),
        "recipe": recipe, "train": asdict(train), "data": asdict(data), "pool_negatives": pool_negatives,
        "pool_hard_negatives": pool_hard_negatives, "max_negatives": max_negatives, "caption_tokens": caption_tokens, "summary_tokens": summary_tokens,
        **(protocol_extra or {}),
    }
    store = RunStore(run_dir, protocol)

    # test negatives held out of the pool (fixed on the first run, reused on resume)
    training_pool: dict[str, Any] = {}
    held = store.read_json("pool_negatives.json")
    if pool_negatives or pool_hard_negatives:
        if held is None or any(s.name not in held for s in chosen):
            pool = pool_fn() if pool_fn else None
            if pool is None:
                raise ValueError("pool negatives were asked for but there is no image pool")
            training_pool["pool"] = hold_out_pool_negatives(pool, dataset, dataset.subjects, pool_negatives, pool_hard_negatives, seed)
            held = {k: [str(p) for p in v] for k, v in dataset.pool_negatives.items()}
            store.write_json("pool_negatives.json", held)
        else:
            dataset.pool_negatives = {k: [Path(p) for p in v] for k, v in held.items()}

    def get_pool():
        if "pool" not in training_pool:
            from .datasets import subset_pool

            pool = pool_fn() if pool_fn else None
            if pool is None:
                raise ValueError("this method needs an image pool but none was given")
            excluded = {p for v in dataset.pool_negatives.values() for p in map(str, v)}
            training_pool["pool"] = subset_pool(pool, excluded) if excluded else pool
        return training_pool["pool"]

    ctx = EvalContext(engine, store.dir, train, data, recipe_name=recipe, pool_fn=get_pool, caption_tokens=caption_tokens,
                      summary_tokens=summary_tokens, progress=progress, reuse_from=list(reuse_from or []))
    done = store.done()
    for mname in methods:
        method = make_method(mname)
        for subject in chosen:
            if (mname, subject.name) in done:
                echo(f"{mname} / {subject.name}: done earlier, skipped")
                continue
            paths, labels = dataset.test_set(subject, max_negatives, seed)
            record: dict[str, Any] = {"task": "recognition", "method": mname, "subject": subject.name}
            t0 = time.perf_counter()
            try:
                info = method.prepare(ctx, subject)
                t1 = time.perf_counter()
                scores = method.recognition_scores(ctx, subject, paths)
                t2 = time.perf_counter()
                threshold = method.threshold(ctx, subject)
                record |= {
                    "info": info, "threshold": threshold, "prepare_seconds": round(t1 - t0, 2), "score_seconds": round(t2 - t1, 2),
                    "photos": [_rel(p, data_root) for p in paths], "labels": labels, "scores": [round(s, 6) for s in scores],
                    "metrics": recognition_metrics(labels, scores, threshold),
                    "metrics_at_0.5": recognition_metrics(labels, scores, 0.5),
                }
            except Unavailable as e:
                record["unavailable"] = str(e)
            finally:
                method.release(ctx, subject)
            store.append(record)
            echo(_describe(record))
    results = aggregate(store.records(), methods, [s.name for s in chosen])
    results["protocol"] = {k: v for k, v in protocol.items() if k != "split"}
    results["split"] = {s.name: protocol["split"][s.name] for s in chosen}
    results["notes"] = dataset.notes
    if max_negatives:
        results["notes"] += f"; at most {max_negatives} negatives per subject (a seeded sample, the same for every method)"
    if pool_negatives or pool_hard_negatives:
        results["notes"] += (f"; plus test negatives held out of the image pool (and removed from the pool every training set is built "
                             f"from): {pool_negatives} random photos (seed {seed}) shared by all subjects"
                             + (f" and, per subject, the {pool_hard_negatives} pool photos nearest its test photos (EfficientNet-Lite cosine)"
                                if pool_hard_negatives else ""))
    results["run_dir"] = str(store.dir)
    return results


def _describe(r: dict) -> str:
    if "unavailable" in r:
        return f"{r['method']} / {r['subject']}: unavailable ({r['unavailable']})"
    m = r["metrics"]
    auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
    return (f"{r['method']} / {r['subject']}: weighted {m['weighted_accuracy']:.3f} (pos {m['positive_accuracy']:.2f}, "
            f"neg {m['negative_accuracy']:.2f}, threshold {r['threshold']:.2f}), AUC {auc} "
            f"[{r['prepare_seconds']:.0f}s prepare, {r['score_seconds']:.0f}s scoring]")


def _pooled(records: list[dict], key: str = "metrics") -> dict:
    n_pos = sum(r[key]["n_positive"] for r in records)
    n_neg = sum(r[key]["n_negative"] for r in records)
    pos = sum((r[key]["positive_accuracy"] or 0) * r[key]["n_positive"] for r in records) / n_pos if n_pos else None
    neg = sum((r[key]["negative_accuracy"] or 0) * r[key]["n_negative"] for r in records) / n_neg if n_neg else None
    parts = [a for a in (pos, neg) if a is not None]
    aucs = [r[key]["auc"] for r in records if r[key]["auc"] is not None]
    weighted = [r[key]["weighted_accuracy"] for r in records if r[key]["weighted_accuracy"] is not None]
    return {
        "positive_accuracy": pos, "negative_accuracy": neg,
        "weighted_accuracy": sum(parts) / len(parts) if parts else None,
        "auc": sum(aucs) / len(aucs) if aucs else None,
        "weighted_accuracy_mean_over_subjects": sum(weighted) / len(weighted) if weighted else None,
        "n_positive": n_pos, "n_negative": n_neg,
    }


def aggregate(records: list[dict], methods: list[str], subjects: list[str]) -> dict:
    """Per-subject and overall metrics for the given methods and subjects (latest record wins)."""
    latest: dict[tuple[str, str], dict] = {}
    for r in records:
        if r.get("task", "recognition") == "recognition":
            latest[(r["method"], r["subject"])] = r
    per_subject: dict[str, dict[str, Any]] = {m: {} for m in methods}
    overall: dict[str, Any] = {}
    for m in methods:
        rows = []
        for s in subjects:
            r = latest.get((m, s))
            if r is None:
                continue
            if "unavailable" in r:
                per_subject[m][s] = {"unavailable": r["unavailable"]}
                continue
            per_subject[m][s] = {**r["metrics"], "threshold": r["threshold"], "prepare_seconds": r["prepare_seconds"],
                                 "score_seconds": r["score_seconds"],
                                 **({"description": r["info"]["description"]} if "description" in r.get("info", {}) else {})}
            rows.append(r)
        if rows:
            overall[m] = {**_pooled(rows), "subjects": len(rows),
                          "at_threshold_0.5": {k: v for k, v in _pooled(rows, "metrics_at_0.5").items() if k in ("positive_accuracy", "negative_accuracy", "weighted_accuracy")},
                          "prepare_seconds": round(sum(r["prepare_seconds"] for r in rows), 1),
                          "score_seconds": round(sum(r["score_seconds"] for r in rows), 1)}
        else:
            overall[m] = {"subjects": 0}
    return {"task": "recognition", "methods": methods, "subjects": subjects, "overall": overall, "per_subject": per_subject}
