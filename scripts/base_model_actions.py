"""Does the base model itself say what a subject is *doing*? (bounds "What is <x> doing?" in issue 26)

Asks the frozen model, with no concept, "What is the <kind> doing?" and "What is it doing?" about held-out photos of
``<bo>`` (a dog) and writes every answer, unedited, with a count of answers that name an action (a verb ending in
-ing after "is", other than "is doing").

    python scripts/base_model_actions.py --photos 10 --out benchmarks/results/base_model_actions_bo.md
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

QUESTIONS = ("What is the dog doing?", "What is it doing?")
_ACTION = re.compile(r"\b(?:is|are)\s+(?!doing\b)(\w+ing)\b", re.I)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.paths import default_data_root

    root = Path(os.environ.get("YOLLAVA_DATA", default_data_root()))
    photos = sorted((root / "yollava" / "bo" / "test").glob("*.jpg"))[: args.photos]
    engine = YoLLaVA.from_pretrained("pocket")
    rows = []
    for p in photos:
        for q in QUESTIONS:
            a = engine.chat(q, image=p, max_new_tokens=40)
            rows.append((p.name, q, a, bool(_ACTION.search(a))))
            print(p.name, "|", q, "->", a, flush=True)
    lines = ["# Does the base model say what the subject is doing? (no concept)", "", "```",
             f"python scripts/base_model_actions.py --photos {args.photos} --out {args.out}", "```", "",
             "| question | photos | answers naming an action |", "|---|---:|---:|"]
    lines += [f"| {q} | {len(photos)} | {sum(r[3] for r in rows if r[1] == q)} |" for q in QUESTIONS]
    lines += ["", "| photo | question | answer | action |", "|---|---|---|---|"]
    lines += [f"| {n} | {q} | {a.replace('|', '/')} | {'yes' if act else ''} |" for n, q, a, act in rows]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
