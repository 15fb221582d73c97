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
from pathlib import Path
from typing import Any, Callable

from ..engine import RECOGNITION_QUERY, YoLLaVA
from ..recipes import DataConfig
from ..train import TrainConfig, recognition_metrics
from .datasets import RecognitionDataset, hold_out_pool_negatives
from .driver import Task, run_benchmark
from .methods import EvalContext, Method
from .registry import register_task
from .report import recognition_markdown
from .store import RunStore

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


def _rel(p: Path, root: Path | None) -> str:
    try:
        return str(Path(p).relative_to(root)) if root else str(p)
    except ValueError:
        return str(p)


@register_task("recognition")
class RecognitionTask(Task):
    """Every method's P(yes) on each subject's test photos (its own, other subjects', held-out pool photos)."""

    chance_line = True
    markdown = staticmethod(recognition_markdown)

    def __init__(self, dataset: RecognitionDataset, *, subjects: list[str] | None = None, max_subjects: int | None = None,
                 pool_negatives: int = 0, pool_hard_negatives: int = 0, max_negatives: int | None = None, seed: int = 0,
                 data_root: Path | None = None, protocol_extra: dict | None = None):
        self.dataset = dataset
        self.subjects = dataset.select(subjects, max_subjects)
        self.pool_negatives, self.pool_hard_negatives, self.max_negatives = pool_negatives, pool_hard_negatives, max_negatives
        self.seed, self.data_root, self.protocol_extra = seed, data_root, protocol_extra or {}

    def protocol(self, common: dict[str, Any]) -> dict[str, Any]:
        return {
            "task": "recognition", "version": PROTOCOL_VERSION, "dataset": self.dataset.name, "seed": self.seed,
            "split": self.dataset.split(), "query": RECOGNITION_QUERY, "model": common["model"],
            "recipe": common["recipe"], "train": common["train"], "data": common["data"], "pool_negatives": self.pool_negatives,
            "pool_hard_negatives": self.pool_hard_negatives, "max_negatives": self.max_negatives,
            "caption_tokens": common["caption_tokens"], "summary_tokens": common["summary_tokens"],
            **self.protocol_extra,
        }

    def training_pool(self, store: RunStore, pool_fn: Callable[[], Any] | None) -> Callable[[], Any]:
        """Test negatives held out of the pool (fixed on the first run, reused on resume); the methods train
        with the pool less those."""
        dataset, training_pool = self.dataset, {}
        held = store.read_json("pool_negatives.json")
        if self.pool_negatives or self.pool_hard_negatives:
            if held is None or any(s.name not in held for s in self.subjects):
                pool = pool_fn() if pool_fn else None
                if pool is None:
                    raise ValueError("pool negatives were asked for but there is no image pool")
                training_pool["pool"] = hold_out_pool_negatives(pool, dataset, dataset.subjects, self.pool_negatives,
                                                                self.pool_hard_negatives, self.seed)
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

        return get_pool

    def score(self, ctx: EvalContext, method: Method, subject, info: dict, started: float) -> dict[str, Any]:
        t1 = time.perf_counter()
        paths, labels = self.dataset.test_set(subject, self.max_negatives, self.seed)
        scores = method.recognition_scores(ctx, subject, paths)
        t2 = time.perf_counter()
        threshold = method.threshold(ctx, subject)
        return {
            "info": info, "threshold": threshold, "prepare_seconds": round(t1 - started, 2), "score_seconds": round(t2 - t1, 2),
            "photos": [_rel(p, self.data_root) for p in paths], "labels": labels, "scores": [round(s, 6) for s in scores],
            "metrics": recognition_metrics(labels, scores, threshold),
            "metrics_at_0.5": recognition_metrics(labels, scores, 0.5),
        }

    def describe(self, r: dict) -> str:
        m = r["metrics"]
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        return (f"weighted {m['weighted_accuracy']:.3f} (pos {m['positive_accuracy']:.2f}, "
                f"neg {m['negative_accuracy']:.2f}, threshold {r['threshold']:.2f}), AUC {auc} "
                f"[{r['prepare_seconds']:.0f}s prepare, {r['score_seconds']:.0f}s scoring]")

    def finish(self, results: dict, protocol: dict, store: RunStore) -> dict:
        results["protocol"] = {k: v for k, v in protocol.items() if k != "split"}
        results["split"] = {s.name: protocol["split"][s.name] for s in self.subjects}
        results["notes"] = self.dataset.notes
        if self.max_negatives:
            results["notes"] += f"; at most {self.max_negatives} negatives per subject (a seeded sample, the same for every method)"
        if self.pool_negatives or self.pool_hard_negatives:
            results["notes"] += (f"; plus test negatives held out of the image pool (and removed from the pool every training set is built "
                                 f"from): {self.pool_negatives} random photos (seed {self.seed}) shared by all subjects"
                                 + (f" and, per subject, the {self.pool_hard_negatives} pool photos nearest its test photos (EfficientNet-Lite cosine)"
                                    if self.pool_hard_negatives else ""))
        results["run_dir"] = str(store.dir)
        return results

    @classmethod
    def summarise(cls, r: dict) -> dict:
        return {**r["metrics"], "threshold": r["threshold"], "prepare_seconds": r["prepare_seconds"], "score_seconds": r["score_seconds"],
                **({"description": r["info"]["description"]} if "description" in r.get("info", {}) else {})}

    @classmethod
    def pool(cls, rows: list[dict]) -> dict:
        if not rows:
            return {"subjects": 0}
        return {**_pooled(rows), "subjects": len(rows),
                "at_threshold_0.5": {k: v for k, v in _pooled(rows, "metrics_at_0.5").items()
                                     if k in ("positive_accuracy", "negative_accuracy", "weighted_accuracy")},
                "prepare_seconds": round(sum(r["prepare_seconds"] for r in rows), 1),
                "score_seconds": round(sum(r["score_seconds"] for r in rows), 1)}

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list]:
        overall = results["overall"]
        return {"weighted accuracy": [overall.get(m, {}).get("weighted_accuracy") for m in results["methods"]],
                "ROC-AUC": [overall.get(m, {}).get("auc") for m in results["methods"]]}


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
    task = RecognitionTask(dataset, subjects=subjects, max_subjects=max_subjects, pool_negatives=pool_negatives,
                           pool_hard_negatives=pool_hard_negatives, max_negatives=max_negatives, seed=seed, data_root=data_root,
                           protocol_extra=protocol_extra)
    return run_benchmark(task, engine, methods, run_dir, train=train, data=data, recipe=recipe, pool_fn=pool_fn,
                         caption_tokens=caption_tokens, summary_tokens=summary_tokens, progress=progress, echo=echo, reuse_from=reuse_from)


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
    return RecognitionTask.aggregate(records, methods, subjects)
