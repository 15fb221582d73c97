"""One benchmark driver for every task: for each method and subject, make the method (registry), skip
the pair if the run folder already has it, prepare (train / describe / fit, cached), let the task
score it, release, and append one JSONL record; then aggregate the latest record of every pair.

A task (:class:`Task`, registered with ``@register_task``) only says what is particular to it: its
subjects, its protocol (what ``config.json`` pins for resume), how one prepared method is scored on
one subject (the record's fields), the one-line progress message, how a record is summarised per
subject and how records are pooled overall, and the markdown / chart of its report. Methods come from
the method registry (:mod:`yollava.eval.registry`): adding a baseline is one class.

Run folders written before this driver (``config.json``, ``records.jsonl``, ``concepts/``,
``descriptions/``, ``pool_negatives.json``) are the same files: a run resumes and aggregates as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from ..recipes import DataConfig
from ..train import TrainConfig
from .datasets import Subject
from .methods import EvalContext, Method, Unavailable
from .registry import make_method
from .store import RunStore

#: records written before records named their task were recognition records
LEGACY_TASK = "recognition"


class Task:
    """What one benchmark measures. Subclasses set ``subjects`` in ``__init__`` and override the hooks."""

    name: ClassVar[str] = ""
    #: the subjects every method is run on, in order
    subjects: list[Subject]

    # ---- the run ------------------------------------------------------------------------------
    def protocol(self, common: dict[str, Any]) -> dict[str, Any]:
        """Everything that must not change while a run folder is resumed. ``common``: the model's
        fingerprint, the recipe (name, train, data) and the text-model baseline's lengths."""
        return {"task": self.name, **common}

    def stored_protocol(self, protocol: dict[str, Any]) -> dict[str, Any]:
        """The part of the protocol written to (and compared with) ``config.json``."""
        return protocol

    def training_pool(self, store: RunStore, pool_fn: Callable[[], Any] | None) -> Callable[[], Any] | None:
        """The image pool the methods may train with (e.g. with held-out test negatives removed)."""
        return pool_fn

    def score(self, ctx: EvalContext, method: Method, subject: Subject, info: dict, started: float) -> dict[str, Any]:
        """The record's fields for a prepared method on one subject (``started``: before ``prepare``).
        Raise :class:`~yollava.eval.methods.Unavailable` when the method cannot answer this task."""
        raise NotImplementedError

    def describe(self, record: dict) -> str:
        """The progress line after ``"method / subject: "``."""
        return "done"

    def finish(self, results: dict, protocol: dict, store: RunStore) -> dict:
        """Add the task's protocol, notes and run folder to the aggregated results."""
        return results | {"protocol": protocol, "run_dir": str(store.dir)}

    # ---- aggregation --------------------------------------------------------------------------
    @classmethod
    def summarise(cls, record: dict) -> dict:
        """One finished (method, subject) record as its per-subject row."""
        raise NotImplementedError

    @classmethod
    def pool(cls, records: list[dict]) -> dict:
        """One method's finished records (every subject) as its overall row."""
        raise NotImplementedError

    @classmethod
    def extras(cls, rows: dict[str, list[tuple[str, dict]]]) -> dict:
        """Anything else the results carry (``rows``: method -> [(subject, record)])."""
        return {}

    @classmethod
    def aggregate(cls, records: list[dict], methods: list[str], subjects: list[str]) -> dict:
        """Per-subject and overall results for ``methods`` and ``subjects`` (the latest record of a pair wins;
        an unavailable pair is listed per subject and not counted)."""
        latest = {(r["method"], r["subject"]): r for r in records if r.get("task", LEGACY_TASK) == cls.name}
        per_subject: dict[str, dict[str, Any]] = {m: {} for m in methods}
        overall: dict[str, Any] = {}
        rows: dict[str, list[tuple[str, dict]]] = {}
        for m in methods:
            mine = []
            for s in subjects:
                r = latest.get((m, s))
                if r is None:
                    continue
                if "unavailable" in r:
                    per_subject[m][s] = {"unavailable": r["unavailable"]}
                    continue
                per_subject[m][s] = cls.summarise(r)
                mine.append((s, r))
            rows[m] = mine
            overall[m] = cls.pool([r for _, r in mine])
        return {"task": cls.name, "methods": methods, "subjects": subjects, "overall": overall, "per_subject": per_subject,
                **cls.extras(rows)}

    # ---- the report ---------------------------------------------------------------------------
    @staticmethod
    def markdown(results: dict, title: str | None = None) -> str:
        raise NotImplementedError

    @classmethod
    def chart_series(cls, results: dict) -> dict[str, list] | None:
        """Bars per method for the report's PNG (None: no chart)."""
        return None

    #: draw the 0.5 line in the chart
    chance_line: ClassVar[bool] = False


def run_benchmark(
    task: Task,
    engine,
    methods: Sequence[str],
    run_dir: str | Path,
    *,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    recipe: str = "fast",
    pool_fn: Callable[[], Any] | None = None,
    caption_tokens: int = 96,
    summary_tokens: int = 48,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    reuse_from: list[Path] | None = None,
) -> dict:
    """Run (or resume) ``task`` for every method on every subject in ``run_dir``; returns the aggregated results."""
    train, data = train or TrainConfig(), data or DataConfig()
    common = {"model": engine.fingerprint(), "recipe": recipe, "train": asdict(train), "data": asdict(data),
              "caption_tokens": caption_tokens, "summary_tokens": summary_tokens}
    protocol = task.protocol(common)
    store = RunStore(run_dir, task.stored_protocol(protocol))
    ctx = EvalContext(engine, store.dir, train, data, recipe_name=recipe, pool_fn=task.training_pool(store, pool_fn),
                      caption_tokens=caption_tokens, summary_tokens=summary_tokens, progress=progress, reuse_from=list(reuse_from or []))
    done = store.done()
    reusable = store.reusable_records(list(reuse_from or []))
    methods = list(methods)
    for mname in methods:
        method = make_method(mname)
        for subject in task.subjects:
            if (mname, subject.name) in done:
                echo(f"{mname} / {subject.name}: done earlier, skipped")
                continue
            if (mname, subject.name) in reusable:  # made under this very protocol in another run folder
                store.append(reusable[mname, subject.name])
                echo(f"{mname} / {subject.name}: reused from {reusable[mname, subject.name]['reused_from']}")
                continue
            record: dict[str, Any] = {"task": task.name, "method": mname, "subject": subject.name}
            started = time.perf_counter()
            try:
                info = method.prepare(ctx, subject)
                record |= task.score(ctx, method, subject, info, started)
            except Unavailable as e:
                record["unavailable"] = str(e)
            finally:
                method.release(ctx, subject)
            store.append(record)
            echo(f"{mname} / {subject.name}: " + (f"unavailable ({record['unavailable']})" if "unavailable" in record
                                                   else task.describe(record)))
    results = task.aggregate(store.records(), methods, [s.name for s in task.subjects])
    return task.finish(results, protocol, store)
