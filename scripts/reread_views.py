"""Re-read a recognition run's concepts in views: what ``--reading views`` gives on its test photos, without retraining.

A concept's reading (:attr:`yollava.concepts.Concept.reading`) changes no training step, only how its yes/no is read
and calibrated, so a committed ``yollava eval recognition`` run folder already holds everything a ``views`` concept
needs: the concepts, their training sets (calibration samples) and the test photos with their ``whole`` scores. Per
subject this script

* re-calibrates the threshold on the concept's own calibration samples read in views (and checks that reading them
  whole gives back the stored threshold: the samples are the ones training used);
* scores the run's test photos (same photos, same labels) in views;
* records ``whole`` (the run's scores, its threshold), ``views`` and, where the run has it, the ``head``.

The reading was chosen on the dev subjects (``scripts/small_subject_dev.py``); this re-reads a test set with it.

    python scripts/reread_views.py --run benchmarks/results/eval_myvlm_v2_session12/results.run \
        --subjects minion_toy iverson_funko_pop --out benchmarks/results/views_myvlm_v2.md --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from small_subject_dev import metrics, query, views_threshold


def load_records(run: Path) -> dict[tuple[str, str], dict]:
    """The run's finished (method, subject) records that have scores."""
    from yollava.eval.store import read_records

    return {(r["method"], r["subject"]): r for r in read_records(run / "records.jsonl") if "scores" in r}


def split_scores(record: dict) -> tuple[list[float], list[float]]:
    pos = [s for s, y in zip(record["scores"], record["labels"]) if y]
    return pos, [s for s, y in zip(record["scores"], record["labels"]) if not y]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True, help="a recognition run folder (results.run)")
    ap.add_argument("--subjects", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True, help="the table (.md); one JSON line per subject beside it (.jsonl)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    lines_path = args.out.with_suffix(".jsonl")
    done = [json.loads(x) for x in lines_path.read_text().splitlines()] if lines_path.exists() else []
    records = load_records(args.run)
    missing = [s for s in args.subjects if ("yollava", s) not in records]
    if missing:
        raise SystemExit(f"{args.run} has no finished yollava record for {', '.join(missing)}")
    import torch

    torch.set_num_threads(args.threads)
    from yollava import YoLLaVA
    from yollava.paths import default_data_root

    data = Path(default_data_root())
    config = json.loads((args.run / "config.json").read_text())
    seed = config.get("train", {}).get("seed", 0)
    concepts = args.run / "concepts" / "yollava"
    engine = None
    for name in [] if args.table_only else args.subjects:
        if any(d["run"] == str(args.run) and d["subject"] == name for d in done):
            continue
        if engine is None:
            engine = YoLLaVA.from_pretrained("pocket", concepts_dir=concepts)
        record = records["yollava", name]
        engine.load_concept(concepts / f"{name}.json")
        training_set = json.loads((args.run / "training_sets" / "yollava" / f"{name}.json").read_text())
        stored = engine.bank[name].threshold
        check = views_threshold(engine, name, training_set, seed, views=False)
        threshold = views_threshold(engine, name, training_set, seed)
        photos = [p if Path(p).is_absolute() else data / p for p in record["photos"]]
        views = engine.prompt_yes_probabilities(query(name), photos, [name], views=True)
        row = {"run": str(args.run), "subject": name, "stored_threshold": stored, "recomputed_threshold": check,
               "views_threshold": threshold}
        pos, neg = split_scores(record)
        row["whole"] = metrics(pos, neg, record["threshold"])
        row["views"] = metrics(*split_scores({**record, "scores": views}), threshold)
        if ("head", name) in records:
            head = records["head", name]
            row["head"] = metrics(*split_scores(head), head["threshold"])
        row["views_scores"] = [round(s, 6) for s in views]
        print(f"{name}: threshold stored {stored:.4f} recomputed {check:.4f} views {threshold:.4f}; "
              + ", ".join(f"{k} {row[k][0]:.3f}/{row[k][1]:.3f}" for k in ("whole", "views", "head") if k in row), flush=True)
        with lines_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        engine.unload_concept(name)
    rows = [d for d in (json.loads(x) for x in lines_path.read_text().splitlines()) if d["subject"] in args.subjects]
    rules = [r for r in ("whole", "views", "head") if all(r in d for d in rows)]
    subjects = " ".join(args.subjects)
    out = ["# A recognition run's concepts re-read in views", "",
           f"`python scripts/reread_views.py --run {args.run} --subjects {subjects} --out {args.out} --threads {args.threads}`", "",
           "Per subject: weighted accuracy at the rule's own threshold / ROC-AUC on the run's test photos. `whole`: the run's "
           "scores and stored threshold; `views`: the same concept read as the best of its views, its threshold re-calibrated "
           "on its own calibration samples read the same way; `head`: the run's concept head.", "",
           "| subject | " + " | ".join(rules) + " | threshold whole → views |", "|---|" + "---:|" * len(rules) + "---:|"]
    for d in rows:
        out.append(f"| {d['subject']} | " + " | ".join(f"{d[r][0]:.3f} / {d[r][1]:.3f}" for r in rules)
                   + f" | {d['stored_threshold']:.2f} → {d['views_threshold']:.2f} |")
    if rows:
        out.append("| **mean** | " + " | ".join(f"{np.mean([d[r][0] for d in rows]):.3f} / {np.mean([d[r][1] for d in rows]):.3f}"
                                             for r in rules) + " | |")
    args.out.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
