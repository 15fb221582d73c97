"""results.json, a markdown table results.md and a bar chart results.png, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.pool import atomic_write_json

PAPER_NOTE = {
    "recognition": "Paper (LLaVA-1.5-13B, 40 subjects): Yo'LLaVA weighted 0.924; vanilla LLaVA 0.500; LLaVA + human text 0.822; "
                   "LLaVA + own summarised text 0.819 (Table 5).",
    "qa": "Paper (LLaVA-1.5-13B): text-only QA Yo'LLaVA 0.883, vanilla 0.659, + human text 0.790; visual QA 0.929 / 0.899 / 0.925 (Table 5).",
    "caption": "Paper (MyVLM protocol): caption recall Yo'LLaVA 100.0 %, MyVLM 96.0 % (Table 6).",
}


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


def _header(results: dict, title: str | None) -> list[str]:
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
    if results.get("task") in PAPER_NOTE:
        lines.append(f"- for reference: {PAPER_NOTE[results['task']]}")
    lines.append("")
    return lines


def recognition_markdown(results: dict, title: str | None = None) -> str:
    lines = _header(results, title or "Recognition")
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
    if n:
        lines += ["", f"Test photos: {n['n_positive']} positives, {n['n_negative']} negatives in all. Threshold: the concept's "
                  "calibrated one for Yo'LLaVA, 0.5 otherwise (\"weighted @0.5\" uses 0.5 for every method). Overall accuracies pool "
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
    unavailable = [(m, s, r["unavailable"]) for m in results["methods"] for s, r in results["per_subject"].get(m, {}).items() if "unavailable" in r]
    if unavailable:
        lines += ["", "## Not run", ""] + [f"- {m}, {s}: {why}" for m, s, why in unavailable]
    if results.get("extra_notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["extra_notes"]]
    return "\n".join(lines) + "\n"


def qa_markdown(results: dict, title: str | None = None) -> str:
    lines = _header(results, title or f"Question answering ({results.get('kind', '')})")
    lines += ["| method | subjects | questions | option likelihood (per token) | likelihood (sum) | letter: both orders, mean | as given | swapped | right in both | answers \"A\" | mean P(correct) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in results["methods"]:
        o = results["overall"].get(m, {})
        lines.append(f"| {m} | {o.get('subjects', 0)} | {o.get('n', 0)} | **{_f(o.get('accuracy_likelihood'))}** | {_f(o.get('accuracy_likelihood_sum'))} | "
                     f"**{_f(o.get('accuracy'))}** | {_f(o.get('accuracy_as_given'))} | "
                     f"{_f(o.get('accuracy_swapped'))} | {_f(o.get('accuracy_both_orders'))} | {_f(o.get('answered_A'))} | {_f(o.get('mean_p_correct'))} |")
    lines += ["", "Option likelihood (as lm-evaluation-harness scores multiple choice): the question is asked alone and each option's "
              "text is scored as the reply; the option with the higher mean log-probability per token (or total) is the answer. "
              "No letter is involved. Letter scoring: each question is asked twice, options as given and with A and B swapped; "
              "\"both orders, mean\" is the mean over both (a model that always answers \"A\" gets 0.5). \"As given\" is the paper's "
              "protocol, but the answer keys are skewed (text-only: 390 of 400 correct answers are A; visual: 99 A / 71 B), so "
              "always-\"A\" would score 0.975 on text as given."]
    if len(results["subjects"]) > 1:
        lines += ["", "## Per subject (option likelihood / letter, both orders; letter as given in brackets)", "", "| subject | " + " | ".join(results["methods"]) + " |",
                  "|---|" + "---:|" * len(results["methods"])]
        for s in results["subjects"]:
            cells = []
            for m in results["methods"]:
                r = results["per_subject"].get(m, {}).get(s)
                cells.append("–" if r is None else "n/a" if "unavailable" in r
                             else f"{_f(r.get('accuracy_likelihood'), 2)} / {_f(r['accuracy'], 2)} ({_f(r['accuracy_as_given'], 2)})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    unavailable = [(m, s, r["unavailable"]) for m in results["methods"] for s, r in results["per_subject"].get(m, {}).items() if "unavailable" in r]
    if unavailable:
        lines += ["", "## Not run", ""] + [f"- {m}, {s}: {why}" for m, s, why in unavailable]
    if results.get("extra_notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["extra_notes"]]
    return "\n".join(lines) + "\n"


def caption_markdown(results: dict, title: str | None = None) -> str:
    lines = _header(results, title or "Caption recall")
    lines += ["| method | subjects | captions | recall |", "|---|---:|---:|---:|"]
    for m in results["methods"]:
        o = results["overall"].get(m, {})
        lines.append(f"| {m} | {o.get('subjects', 0)} | {o.get('n', 0)} | **{_f(o.get('recall'))}** |")
    examples = results.get("examples", {})
    if examples:
        lines += ["", "## Example captions", ""]
        for m, items in examples.items():
            for it in items[:3]:
                lines.append(f"- {m}, {it['subject']} ({it['photo']}): “{it['caption']}” → {'named' if it['hit'] else 'not named'}")
    unavailable = [(m, s, r["unavailable"]) for m in results["methods"] for s, r in results["per_subject"].get(m, {}).items() if "unavailable" in r]
    if unavailable:
        lines += ["", "## Not run", ""] + [f"- {m}, {s}: {why}" for m, s, why in unavailable]
    return "\n".join(lines) + "\n"


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
