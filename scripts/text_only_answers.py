"""Text-only answers about a concept (no photo): does it still say what the subject is?

Loads the concepts of evaluation / recipe-dev run folders (``<run>/concepts/yollava/*.json``) and asks each one, with
no photo, the demo's question and a plain one; an answer counts when it names the subject's kind (:data:`KINDS`, the
dev subjects' and ``<bo>``'s). Written to find what made the demo's text-only answer regress in session 12 (fast's
visual start or its caption samples) by comparing run folders that differ in one of them.

    python scripts/text_only_answers.py --runs benchmarks/results/recipe_dev_v2/fast-seed0.run \\
        benchmarks/results/recipe_dev_v2/fast-visual-global-captions-seed0.run --out benchmarks/results/text_only_answers.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

QUESTIONS = ("What kind of animal is {x}? Describe {x}.", "What is {x}?")
KINDS = {"bo": ("dog", "shiba", "puppy"), "mam": ("cat", "kitten"), "garfield": ("cat", "kitten"),
         "snoopy": ("dog", "beagle", "puppy"), "dalmatian": ("dog", "dalmatian", "puppy")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA

    engine = YoLLaVA.from_pretrained("pocket")
    rows, per_run = [], {}
    for run in args.runs:
        label = f"{run.parent.name}/{run.name}"
        for path in sorted((run / "concepts" / "yollava").glob("*.json")):
            name = path.stem
            if name not in KINDS:
                continue
            engine.load_concept(path)
            for q in QUESTIONS:
                question = q.format(x=f"<{name}>")
                a = engine.chat(question, max_new_tokens=40)
                hit = any(re.search(rf"\b{w}s?\b", a, re.I) for w in KINDS[name])
                rows.append((label, name, question, a, hit))
                per_run.setdefault(label, [0, 0])
                per_run[label][0] += hit
                per_run[label][1] += 1
                print(label, f"<{name}>", "|", question, "->", a, flush=True)
            engine.unload_concept(name)
    lines = ["# Text-only answers about a concept (no photo)", "", "```",
             "python scripts/text_only_answers.py --runs " + " ".join(str(r) for r in args.runs) + f" --out {args.out}", "```", "",
             "| run folder | answers naming the subject's kind |", "|---|---:|"]
    lines += [f"| {r} | {h} of {n} |" for r, (h, n) in per_run.items()]
    lines += ["", "| run | concept | question | answer | kind |", "|---|---|---|---|---|"]
    lines += [f"| {r} | <{c}> | {q} | {a.replace('|', '/')} | {'yes' if h else ''} |" for r, c, q, a, h in rows]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
