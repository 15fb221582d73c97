"""Answers about a concept in a photo: do "Describe <x>." and "What is <x> doing?" name the right kind of subject,
without tautology or filler? (Issue "Concepts on pocket v2": >= 15 of 20 held-out photos, never filler.)

Concepts come from evaluation run folders (``<run>/concepts/yollava/<name>.json``), so they were trained on the
run's training photos only; the photos asked about are the same subjects' held-out test photos (``<bo>``:
``bo/test``; MyVLM: the seeded split of ``yollava eval`` (4 training photos, seed 0)), taken round-robin over the
subjects, at most ``--photos`` in all. Every answer is written unedited to the report.

    python scripts/answers_about_concept.py --runs benchmarks/results/eval_bo_pocket_v2/results.run \
        benchmarks/results/eval_myvlm_v2/results.run --out benchmarks/results/answers_about_concept.md

``--base-model`` asks the same photos the same questions with no concept, the subject named "the main subject of this
photo": what the model sees unaided, which bounds what a concept can answer.

"right kind": the answer, without the identifier, contains a word of the subject's kind (its category in the datasets' ``concept_info``
annotations, widened by :data:`KIND_WORDS`, plus the words of its folder name: ``skulls_mug`` -> skulls, mug).
"filler": a tautology ("<x> is a <x>"), "doing something", "in the context of", the question or the concept
definition repeated back, a refusal ("I'm sorry, I don't know"), an answer given as the subject ("I am a bear."),
or an answer of fewer than three words (:func:`filler`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

QUESTIONS = ("Describe {x}.", "What is {x} doing?")
#: how ``--base-model`` names the subject (no concept)
BASE_SUBJECT = "the main subject of this photo"

#: words that name a kind, for each category of the annotations
KIND_WORDS = {
    "dog": ("dog", "puppy", "shiba", "canine", "pet", "poodle", "retriever", "terrier", "labrador", "bulldog", "spaniel",
            "corgi", "husky", "beagle", "dachshund", "chihuahua", "pug"),
    "cat": ("cat", "kitten", "kitty", "feline", "pet"),
    "toy": ("toy", "figure", "figurine", "doll", "plush", "funko", "stuffed", "character"),
    "plush toy": ("plush", "toy", "stuffed", "teddy", "doll"),
    "statue": ("statue", "sculpture", "figurine", "figure", "ornament"),
    "vase": ("vase", "head", "sculpture", "statue", "pot", "ceramic"),
    "cup": ("cup", "mug", "espresso", "coffee"),
    "shoe": ("shoe", "shoes", "sneaker", "sneakers", "trainer", "trainers", "footwear"),
    "pillow": ("pillow", "cushion"),
    "bank": ("bank", "piggy", "pig"),
    "chicken": ("chicken", "hen", "rooster", "bird"),
    "elephant": ("elephant",),
    "colorful teapot": ("teapot", "pot", "kettle"),
    "white and black bag": ("bag", "bean", "chicken", "cushion", "pillow"),
    "gold_pineapple": ("pineapple", "fruit"),
    "person": ("person", "man", "woman", "boy", "girl", "child", "people", "he", "she"),
}


def kind_words(subject: str, category: str | None) -> set[str]:
    words = set(KIND_WORDS.get(category or "", ())) | {w for w in subject.lower().split("_") if len(w) > 2 and w != "my"}
    if category and category not in KIND_WORDS:
        words |= {w for w in category.lower().replace("_", " ").split() if len(w) > 2}
    return words


def names_kind(answer: str, words: set[str]) -> bool:
    """Whether the answer names the kind in its own words: the identifier (``<billy_dog>``) is dropped first, or
    "<billy_dog> is a seahorse." would count as naming a dog."""
    tokens = set(re.findall(r"[a-z]+", re.sub(r"<[^>]*>", " ", answer).lower()))
    return bool(tokens & words)


def filler(answer: str, identifier: str, question: str) -> str | None:
    """Why ``answer`` is a tautology or filler, or None."""
    a = " ".join(answer.split())
    bare = re.sub(r"<[^>]*>", "", a)
    rules = [
        (re.search(re.escape(identifier) + r" is (?:an? |the )?" + re.escape(identifier), a), "tautology (<x> is a <x>)"),
        (re.search(r"\bdoing (?:something|nothing)\b", a, re.I), "'doing something/nothing'"),
        (re.search(r"in the context of", a, re.I), "'in the context of'"),
        (re.search(re.escape(identifier) + r"\s*is\s*<", a), "the concept definition repeated"),
        (question.lower().rstrip("?.") in a.lower() or re.search(r"who is in this photo", a, re.I), "the question repeated"),
        (re.search(r"\bI(?:'m| am) sorry\b|\b(?:don't|do not) know\b|\bnot sure\b", a, re.I), "a refusal"),
        (re.match(r"I(?:'m| am) ", a), "answers as the subject ('I am ...')"),
        (len(re.findall(r"[A-Za-z]+", bare)) < 3, "fewer than three words"),
    ]
    return next((why for hit, why in rules if hit), None)


def subjects_and_photos(run: Path, data_root: Path, method: str = "yollava") -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Held-out photos and annotation category of each subject whose concept the run folder holds."""
    from yollava.eval.datasets import load_bo, load_myvlm, myvlm_descriptions, yollava_descriptions

    names = {p.stem for p in (run / "concepts" / method).glob("*.json")}
    photos, cats = {}, {}
    if names == {"bo"}:
        ds, (_, c) = load_bo(data_root), yollava_descriptions(data_root)
    else:
        ds, (_, c) = load_myvlm(data_root), myvlm_descriptions(data_root / "myvlm")
    for s in ds.subjects:
        if s.concept in names:
            photos[s.concept], cats[s.concept] = list(s.test), c.get(s.name)
    return photos, cats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="evaluation run folders with concepts/<method>/")
    ap.add_argument("--method", default="yollava", help="whose concepts: yollava (the run's recipe) or myvlm (recipe myvlm: the "
                    "concept head decides whether its embedding follows the photo)")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="report (.md; a .json beside it)")
    ap.add_argument("--base-model", action="store_true", help="the bound: the same photos and questions asked of the model "
                    f"with no concept, the subject named {BASE_SUBJECT!r}")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.paths import default_data_root

    data_root = Path(os.environ.get("YOLLAVA_DATA", default_data_root()))
    engine = YoLLaVA.from_pretrained("pocket")
    queue: list[tuple[Path, str, Path, str | None]] = []  # (run, concept, photo, category)
    per_run = []
    for run in args.runs:
        photos, cats = subjects_and_photos(run, data_root, args.method)
        per_run.append([(run, name, ps, cats[name]) for name, ps in sorted(photos.items())])
    depth = 0
    while len(queue) < args.photos and any(depth < len(ps) for subjects in per_run for *_, ps, _ in subjects):
        for subjects in per_run:
            for run, name, ps, cat in subjects:
                if depth < len(ps) and len(queue) < args.photos:
                    queue.append((run, name, ps[depth], cat))
        depth += 1

    rows = []
    for run, name, photo, cat in queue:
        if not args.base_model:
            engine.load_concept(run / "concepts" / args.method / f"{name}.json")
        x = BASE_SUBJECT if args.base_model else f"<{name}>"
        words = kind_words(name, cat)
        for q in QUESTIONS:
            question = q.format(x=x)
            answer = engine.chat(question, image=photo, concepts=[] if args.base_model else [name], max_new_tokens=args.max_new_tokens)
            why = filler(answer, x, question)
            rows.append({"concept": name, "category": cat, "photo": str(photo.relative_to(data_root)) if photo.is_relative_to(data_root) else str(photo),
                         "question": question, "answer": answer, "right_kind": names_kind(answer, words), "filler": why})
            print(f"{x} {photo.name} | {question} -> {answer!r} | kind {rows[-1]['right_kind']} | filler {why}", flush=True)
        if not args.base_model:
            engine.unload_concept(name)

    n = len(queue)
    summary = {q: {"photos": n, "right_kind": sum(r["right_kind"] for r in rows if r["question"].startswith(q.split("{")[0])),
                   "filler": sum(r["filler"] is not None for r in rows if r["question"].startswith(q.split("{")[0]))} for q in QUESTIONS}
    fingerprint = engine.fingerprint()
    lines = [f"# Answers about a concept in a held-out photo", "",
             "```", "python scripts/answers_about_concept.py --runs " + " ".join(str(r) for r in args.runs)
             + (f" --method {args.method}" if args.method != "yollava" else "") + (" --base-model" if args.base_model else "")
             + f" --out {args.out}", "```", "",
             *([f"- **the base model, no concept**: the subject named {BASE_SUBJECT!r} (what a concept's answers are bounded by)"]
               if args.base_model else []),
             f"- model: `pocket` (weights {fingerprint.get('pocket_weights_sha256')}); concepts from the run folders above "
             "(trained on their training photos only); photos: the same subjects' held-out test photos, round-robin",
             "- target (issue 26): the right kind of subject in >= 15 of 20 for each question, never filler", "",
             "| question | photos | names the right kind | filler |", "|---|---:|---:|---:|"]
    lines += [f"| {q.format(x='<x>')} | {v['photos']} | **{v['right_kind']}** | {v['filler']} |" for q, v in summary.items()]
    lines += ["", "## Every answer, unedited", "", "| concept | photo | question | answer | right kind | filler |", "|---|---|---|---|---|---|"]
    for r in rows:
        ans = r["answer"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| <{r['concept']}> ({r['category']}) | {Path(r['photo']).name} | {r['question']} | {ans} | "
                     f"{'yes' if r['right_kind'] else 'no'} | {r['filler'] or ''} |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
