"""Two recognition runs side by side, subject by subject (``yollava eval compare``).

The question this answers is "what did the change do to each subject", e.g. one epoch against three: a
table of each method's weighted accuracy (at the threshold the user gets) and ROC-AUC per subject in
both runs, their differences, and a scatter plot of one run against the other. Only subjects and methods
present in both runs are compared, and a run folder (its ``records.jsonl``) stands for a run still in
progress, so it can be compared on what it has so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS = ("weighted_accuracy", "auc")
TITLES = {"weighted_accuracy": "weighted accuracy at the concept's threshold", "auc": "ROC-AUC"}


def load_run(path: str | Path) -> dict:
    """A recognition ``results.json``, or a run folder whose ``records.jsonl`` holds the subjects finished so far."""
    import json

    from .store import RECORDS_FILE, read_records

    path = Path(path)
    if not path.is_dir():
        return json.loads(path.read_text(encoding="utf-8"))
    if not (path / RECORDS_FILE).exists():
        raise ValueError(f"{path} is a folder without {RECORDS_FILE}: not an eval run folder")
    per_subject: dict[str, dict] = {}
    tasks = set()
    for r in read_records(path / RECORDS_FILE):
        tasks.add(r.get("task"))
        if "metrics" in r:  # unavailable pairs have none
            per_subject.setdefault(r["method"], {})[r["subject"]] = r["metrics"]
    return {"task": tasks.pop() if len(tasks) == 1 else "mixed", "per_subject": per_subject}


def compare_runs(a: dict, b: dict, methods: list[str] | None = None) -> dict[str, Any]:
    """Per-subject and mean metrics of ``methods`` (default: every method both runs have) in runs ``a`` and ``b``
    (two ``results.json`` of ``yollava eval recognition``)."""
    for name, run in (("first", a), ("second", b)):
        if run.get("task", "recognition") != "recognition" or "per_subject" not in run:
            raise ValueError(f"the {name} results are not a recognition run (task {run.get('task')!r}); compare needs two")
    common = [m for m in a["per_subject"] if m in b["per_subject"]]
    if methods:
        missing = [m for m in methods if m not in common]
        if missing:
            raise ValueError(f"method(s) {', '.join(missing)} not in both runs; both have: {', '.join(common) or 'none'}")
        common = list(methods)
    if not common:
        raise ValueError("the two runs have no method in common")
    out: dict[str, Any] = {"methods": common, "per_subject": {}, "mean": {}}
    for m in common:
        subjects = [s for s in a["per_subject"][m] if s in b["per_subject"][m]]
        rows = {s: {f"{k}_{side}": run["per_subject"][m][s].get(k) for side, run in (("a", a), ("b", b)) for k in METRICS} for s in subjects}
        out["per_subject"][m] = rows
        out["mean"][m] = {key: _mean([r[key] for r in rows.values()]) for key in (f"{k}_{s}" for k in METRICS for s in "ab")}
        out["mean"][m]["subjects"] = len(rows)
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def _delta(a: Any, b: Any) -> str:
    return "–" if a is None or b is None else f"{b - a:+.3f}"


def compare_markdown(comparison: dict, label_a: str, label_b: str, sources: tuple[str, str]) -> str:
    lines = [f"# Recognition: {label_a} vs {label_b}", "", f"- {label_a}: `{sources[0]}`", f"- {label_b}: `{sources[1]}`",
             "- weighted accuracy at each concept's own threshold (what a user gets); ROC-AUC over the same photos", ""]
    lines += [f"| method | subjects | weighted {label_a} | weighted {label_b} | Δ | AUC {label_a} | AUC {label_b} | Δ |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in comparison["methods"]:
        r = comparison["mean"][m]
        lines.append(f"| {m} (mean of subjects) | {r['subjects']} | {_f(r['weighted_accuracy_a'])} | {_f(r['weighted_accuracy_b'])} | "
                     f"{_delta(r['weighted_accuracy_a'], r['weighted_accuracy_b'])} | {_f(r['auc_a'])} | {_f(r['auc_b'])} | {_delta(r['auc_a'], r['auc_b'])} |")
    for m in comparison["methods"]:
        lines += ["", f"## {m}", "", f"| subject | weighted {label_a} | weighted {label_b} | Δ | AUC {label_a} | AUC {label_b} | Δ |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for s, r in comparison["per_subject"][m].items():
            lines.append(f"| {s} | {_f(r['weighted_accuracy_a'])} | {_f(r['weighted_accuracy_b'])} | {_delta(r['weighted_accuracy_a'], r['weighted_accuracy_b'])} | "
                         f"{_f(r['auc_a'])} | {_f(r['auc_b'])} | {_delta(r['auc_a'], r['auc_b'])} |")
    return "\n".join(lines) + "\n"


def compare_plot(comparison: dict, label_a: str, label_b: str, path: str | Path) -> Path:
    """One panel per metric: each subject a point (first run across, second run up), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.6))
    for ax, metric in zip(axes, METRICS):
        for m in comparison["methods"]:
            pts = [(r[f"{metric}_a"], r[f"{metric}_b"]) for r in comparison["per_subject"][m].values()
                   if r[f"{metric}_a"] is not None and r[f"{metric}_b"] is not None]
            if pts:
                ax.scatter(*zip(*pts), label=m, alpha=0.75, s=28)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel=label_a, ylabel=label_b, title=f"{TITLES[metric]}, per subject")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
