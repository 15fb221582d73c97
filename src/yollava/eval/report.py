"""results.json, a markdown table results.md and a bar chart results.png, side by side.

Each task writes its own markdown (``Task.markdown``, in the task's module) with the shared header
(:func:`_header`) and number format (:func:`_f`) from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.pool import atomic_write_json

def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def write_report(results: dict, out: str | Path, title: str | None = None) -> list[Path]:
    """Write ``out`` (JSON) and, beside it, ``<stem>.md`` and ``<stem>.png`` (when the task draws a chart);
    returns the paths. The task (``results["task"]``) writes its own markdown and names its chart's bars."""
    from .registry import get_task

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results)
    md = out.with_suffix(".md")
    png = out.with_suffix(".png")
    task = get_task(results.get("task", "recognition"))
    md.write_text(task.markdown(results, title), encoding="utf-8")
    if task.chart_series(results) is None:
        return [out, md]
    bar_chart(results, png, title)
    return [out, md, png]


def _header(results: dict, title: str | None, paper_note: str | None = None) -> list[str]:
    """The lines every task's report starts with: title, command, model, recipe, data and the paper's numbers."""
    p = results.get("protocol", {})
    lines = [f"# {title or results.get('title') or results.get('task', '').capitalize()}", ""]
    if results.get("command"):
        lines += ["```", results["command"], "```", ""]
    model = p.get("model", {})
    if model:
        lines.append(f"- model: `{model.get('model_id', model.get('family', '?'))}` ({model.get('family', '?')})")
    if p.get("train") and any(m.startswith("yollava") for m in results.get("methods", [])):
        t, d = p["train"], p.get("data", {})
        name = p.get("recipe") if isinstance(p.get("recipe"), str) else (p.get("recipe") or {}).get("name")
        answers = [k for k, key in (("one-word", "short_answers"), ("sentence", "sentence_answers")) if d.get(key, key == "sentence_answers")]
        lines.append(f"- Yo'LLaVA recipe{f' `{name}`' if name else ''}: k={t.get('k')}, epochs={t.get('epochs')}, lr={t.get('lr')}, batch {t.get('batch_size')}, "
                     f"{' + '.join(answers)} recognition answers, "
                     f"easy negatives {d.get('n_easy_negatives')}, hard negatives {d.get('n_hard_negatives') if d.get('hard_negatives') else 0}, "
                     f"conversations {'yes' if d.get('conversations') else 'no'} ({d.get('conversation_tokens')} tokens), "
                     f"threshold from {'calibration samples' if d.get('calibration_negatives') else 'held-back photos'}, seed {t.get('seed')}")
    if results.get("notes"):
        lines.append(f"- data: {results['notes']}")
    if paper_note:
        lines.append(f"- for reference: {paper_note}")
    lines.append("")
    return lines


def _footer(results: dict, notes: bool = True) -> list[str]:
    """The lines a task's report ends with: the (method, subject) pairs that did not run and why, then (``notes``)
    the run's extra notes."""
    lines = []
    unavailable = [(m, s, r["unavailable"]) for m in results["methods"] for s, r in results["per_subject"].get(m, {}).items() if "unavailable" in r]
    if unavailable:
        lines += ["", "## Not run", ""] + [f"- {m}, {s}: {why}" for m, s, why in unavailable]
    if notes and results.get("extra_notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["extra_notes"]]
    return lines


def bar_chart(results: dict, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .registry import get_task

    task = get_task(results.get("task", "recognition"))
    methods = results["methods"]
    series = task.chart_series(results)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(methods) + 2), 3.8))
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(methods))]
        vals = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, vals, width, label=label)
        for b, v in zip(bars, values):
            ax.annotate("n/a" if v is None else f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    if task.chance_line:
        ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha="right")
    ax.set_ylim(0, 1.22)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title(title or results.get("title") or task.name)
    ax.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
