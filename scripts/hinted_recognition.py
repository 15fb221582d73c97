"""Does the language model follow the concept head? "Is <x> in this photo?" asked after a hint from the head.

In chat a question that names a concept is answered by the language model alone (its own P(yes): weighted 0.66 on
MyVLM-29), while ``recognize`` answers with the concept head (0.81). This measures the lever the issue names, the
head's verdict as an input the language model reads, at inference time and with no training: per test photo of a
recognition run folder, the hint is built from the run's own head record (its score against its threshold), put
before the recognition query, and the concept's P(yes) is read again.

Hints (``--hint``): ``present`` only says "In this photo: <x>." when the head finds the subject (what chat does, chosen
on the dev subjects); ``both`` also says "Not in this photo: <x>." when it does not (measured, not shipped).
What chat shows is the greedy answer, "Yes" when P(yes) > P(no): accuracy at 0.5 is that answer.

    python scripts/hinted_recognition.py --run benchmarks/results/recipe_dev_v2/fast-visual-global-captions-x-seed0.run \
        --hint both --out benchmarks/results/recipe_dev_v2/hinted_recognition.md --threads 1

Resumable: one JSON line per (run, hint, subject) beside the table (``.jsonl``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from yollava.eval.store import read_records
from yollava.prompts import RECOGNITION_QUERY
from yollava.train import recognition_metrics
from yollava.who import Found, presence_hint

HINTS = ("both", "present")


#: the alternative measured beside chat's sentence (not shipped): the head's "no" said too
ABSENT = "Not in this photo: <{name}>."


def hint_for(head_score: float, head_threshold: float, name: str, hint: str) -> str:
    """``present``: the sentence chat puts first (:func:`yollava.who.presence_hint`, the very one); ``both``: also
    :data:`ABSENT` when the head does not find the subject."""
    found = Found(name, "Yes" if head_score >= head_threshold else "No", head_score, head_threshold, "head")
    if found.present:
        return presence_hint([found])
    return ABSENT.format(name=name) if hint == "both" else ""


def hinted_prompts(head: dict, name: str, identifier: str, hint: str) -> list[str]:
    """The recognition query after the head's hint, one per photo of the head's record."""
    query = RECOGNITION_QUERY.format(identifier=identifier)
    return [" ".join(p for p in (hint_for(s, head["threshold"], name, hint), query) if p) for s in head["scores"]]


def photo_path(p: str) -> Path:
    """A record's photo: absolute, or relative to the data root."""
    from yollava.paths import default_data_root

    return Path(p) if Path(p).is_absolute() else Path(default_data_root()) / p


def summary(labels: list[bool], scores: list[float], threshold: float) -> dict:
    m = recognition_metrics(labels, scores, threshold)
    return {"weighted": m["weighted_accuracy"], "auc": m["auc"], "positive": m["positive_accuracy"], "negative": m["negative_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, nargs="+", required=True, help="recognition run folders (results.run) with yollava and head records")
    ap.add_argument("--hint", choices=HINTS, nargs="+", default=["both"])
    ap.add_argument("--subjects", nargs="*", default=None, help="default: every subject with both records")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lines = args.out.with_suffix(".jsonl")
    done = [json.loads(x) for x in lines.read_text().splitlines()] if lines.exists() else []
    engine = None
    for run in args.run:
        records = {(r["method"], r["subject"]): r for r in read_records(run / "records.jsonl") if "scores" in r}
        subjects = args.subjects or sorted(s for m, s in records if m == "yollava" and ("head", s) in records)
        for hint in args.hint:
            for name in subjects:
                if any(d["run"] == str(run) and d["hint"] == hint and d["subject"] == name for d in done):
                    continue
                plain, head = records["yollava", name], records["head", name]
                if plain["photos"] != head["photos"]:
                    raise SystemExit(f"{run}: {name}'s yollava and head records score different photos")
                if engine is None:
                    import torch

                    from yollava import YoLLaVA

                    torch.set_num_threads(args.threads)
                    engine = YoLLaVA.from_pretrained("pocket")
                engine.load_concept(run / "concepts" / "yollava" / f"{name}.json")
                identifier = engine.bank[name].identifier
                prompts = hinted_prompts(head, name, identifier, hint)
                scores = []
                for text in sorted(set(prompts)):  # one batched pass per distinct prompt (two at most)
                    idx = [i for i, p in enumerate(prompts) if p == text]
                    got = engine.prompt_yes_probabilities(text, [photo_path(plain["photos"][i]) for i in idx], concepts=[name])
                    scores += list(zip(idx, got))
                hinted = [s for _, s in sorted(scores)]
                labels = plain["labels"]
                row = {"run": str(run), "hint": hint, "subject": name,
                       "plain_own": summary(labels, plain["scores"], plain["threshold"]), "plain_05": summary(labels, plain["scores"], 0.5),
                       "hinted_05": summary(labels, hinted, 0.5), "head": summary(labels, head["scores"], head["threshold"]),
                       "hinted_scores": [round(s, 6) for s in hinted]}
                print(f"{run.name} {hint} {name}: plain@0.5 {row['plain_05']['weighted']:.3f}, hinted@0.5 {row['hinted_05']['weighted']:.3f} "
                      f"(AUC {row['plain_05']['auc']:.3f} -> {row['hinted_05']['auc']:.3f}), head {row['head']['weighted']:.3f}", flush=True)
                with lines.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
                engine.unload_concept(name)
    write_table(args, done)


def write_table(args, rows: list[dict]) -> None:
    runs = [str(r) for r in args.run]
    rows = [d for d in rows if d["run"] in runs and d["hint"] in args.hint]
    cols = (("plain_05", "weighted"), ("plain_own", "weighted"), ("hinted_05", "weighted"), ("head", "weighted"),
            ("plain_05", "auc"), ("hinted_05", "auc"))
    out = ["# The language model after the concept head's hint", "",
           f"`python scripts/hinted_recognition.py --run {' '.join(runs)} --hint {' '.join(args.hint)} --out {args.out} --threads {args.threads}`", "",
           "Mean over subjects. `plain`: the run's own concept scores (no hint), at 0.5 (what chat answers) and at the "
           "concept's threshold; `hinted`: the same concept asked after the head's hint, at 0.5; `head`: the run's head at "
           "its threshold. Positive / negative accuracy of the hinted answers in the last column.", "",
           "| run | hint | subjects | plain @0.5 | plain @own | **hinted @0.5** | head | AUC plain → hinted | hinted: positives / negatives |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for hint in args.hint:
            group = [d for d in rows if d["run"] == run and d["hint"] == hint]
            if not group:
                continue
            mean = {f"{a}.{b}": float(np.mean([d[a][b] for d in group])) for a, b in cols}
            pos = float(np.mean([d["hinted_05"]["positive"] for d in group]))
            neg = float(np.mean([d["hinted_05"]["negative"] for d in group]))
            out.append(f"| {Path(run).name if Path(run).name != 'results.run' else Path(run).parent.name} | {hint} | {len(group)} | "
                       f"{mean['plain_05.weighted']:.3f} | {mean['plain_own.weighted']:.3f} | **{mean['hinted_05.weighted']:.3f}** | "
                       f"{mean['head.weighted']:.3f} | {mean['plain_05.auc']:.3f} → {mean['hinted_05.auc']:.3f} | {pos:.3f} / {neg:.3f} |")
    args.out.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
