"""Recognition benchmark: "Can you see if <sks> is in this photo?" for every method, same photos, one table.

Per (method, subject) the yes-probability of every test photo is recorded (one JSONL line, appended
as soon as it is done; a resumed run skips finished pairs). Metrics (paper §5.1): positive accuracy,
negative accuracy, weighted accuracy ``0.5·pos + 0.5·neg`` and the yes-probability ROC-AUC.
Decision threshold: the concept's calibrated one for Yo'LLaVA (set at training time, never on test photos:
the ``fast`` and ``accurate`` recipes calibrate on unused pool photos and unseen augmented views of the training
photos, see :mod:`yollava.data.builder`; ``paper`` on a held-back slice of the training photos), 0.5 for everything else (for the prompting baselines that is the model's own Yes/No decision,
P(yes) > P(no)).

Overall numbers pool all subjects' test photos as the paper does (333 positives, 13,320 negatives):
accuracy over all positives, over all negatives, weighted = their mean; AUC is the mean of the
per-subject AUCs (scores of different concepts are not on one scale).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..engine import RECOGNITION_QUERY
from ..train import recognition_metrics
from .datasets import RecognitionDataset, hold_out_pool_negatives
from .driver import Task
from .methods import EvalContext, Method
from .registry import register_task
from .report import _f, _footer, _header
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
    #: the paper's numbers, quoted in the report
    paper_note: ClassVar[str] = (
        "Paper (LLaVA-1.5-13B, 40 subjects): Yo'LLaVA weighted 0.924; vanilla LLaVA 0.500; LLaVA + human text 0.822; "
                   "LLaVA + own summarised text 0.819 (Table 5).")

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
                pool = pool_fn() if pool_fn else None
                if pool is None:
                    raise ValueError("this method needs an image pool but none was given")
                excluded = {p for v in dataset.pool_negatives.values() for p in map(str, v)}
                training_pool["pool"] = pool.without(excluded) if excluded else pool
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

    # ---- the report -------------------------------------------------------------------------
    @classmethod
    def markdown(cls, results: dict, title: str | None = None) -> str:
        lines = _header(results, title or "Recognition", cls.paper_note)
        lines += ["| method | subjects | positive acc | negative acc | weighted acc | ROC-AUC | weighted @0.5 | prepare s | scoring s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in results["methods"]:
            o = results["overall"].get(m, {})
            if not o.get("subjects"):
                lines.append(f"| {m} | 0 | – | – | – | – | – | – | – |")
                continue
            lines.append(f"| {m} | {o['subjects']} | {_f(o['positive_accuracy'])} | {_f(o['negative_accuracy'])} | "
                         f"**{_f(o['weighted_accuracy'])}** | {_f(o['auc'])} | {_f(o['at_threshold_0.5']['weighted_accuracy'])} | "
                         f"{_f(o['prepare_seconds'], 0)} | {_f(o['score_seconds'], 0)} |")
        n = next((o for o in results["overall"].values() if o.get("subjects")), None)
        head = {r.get("threshold") for r in results.get("per_subject", {}).get("head", {}).values()} - {None, 0.5}
        own = f", the concept head's own {max(head):g} for head" if head else ""  # runs before session 11 scored the head at 0.5
        if n:
            lines += ["", f"Test photos: {n['n_positive']} positives, {n['n_negative']} negatives in all. Threshold: the concept's "
                      f"calibrated one for Yo'LLaVA{own}, 0.5 otherwise (\"weighted @0.5\" uses 0.5 for every method). Overall accuracies pool "
                      "all subjects' photos; AUC is the mean of per-subject AUCs."]
        if len(results["subjects"]) > 1:
            lines += ["", "## Per subject (weighted accuracy / AUC)", "",
                      "| subject | " + " | ".join(results["methods"]) + " |", "|---|" + "---:|" * len(results["methods"])]
            for s in results["subjects"]:
                cells = []
                for m in results["methods"]:
                    r = results["per_subject"].get(m, {}).get(s)
                    cells.append("–" if r is None else "n/a" if "unavailable" in r else f"{_f(r['weighted_accuracy'], 2)} / {_f(r['auc'], 2)}")
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
        descs = [(m, s, r["description"]) for m in results["methods"] for s, r in results["per_subject"].get(m, {}).items() if r.get("description")]
        if descs:
            lines += ["", "## Descriptions used by the text baselines", ""]
            lines += [f"- {m}, {s}: “{d}”" for m, s, d in descs]
        lines += _footer(results)
        return "\n".join(lines) + "\n"

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list]:
        overall = results["overall"]
        return {"weighted accuracy": [overall.get(m, {}).get("weighted_accuracy") for m in results["methods"]],
                "ROC-AUC": [overall.get(m, {}).get("auc") for m in results["methods"]]}


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
