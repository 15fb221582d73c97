"""Caption recall (MyVLM protocol, Yo'LLaVA Table 6): the share of generated captions of a subject's
test photos that name the subject.

The model is asked "Describe this photo." about each test photo with the subject introduced the
method's way (the learned concept for ``yollava``; a description for the text baselines; nothing
for ``vanilla``). A caption counts when it contains the identifier (``<bo>``) for ``yollava``, or the
subject's plain name (case-insensitive) for the prompting baselines, which cannot emit ``<bo>``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..personalize import DataConfig
from ..train import TrainConfig
from .datasets import RecognitionDataset
from .methods import EvalContext, Unavailable, make_method
from .store import RunStore

CAPTION_QUERY = "Describe this photo."
CAPTION_METHODS = ("yollava", "vanilla", "text-human", "text-model", "yollava-no-hard", "yollava-no-conv")
PROTOCOL_VERSION = 1


def names_subject(caption: str, mention: str) -> bool:
    if mention.startswith("<"):
        return mention in caption
    return mention.lower() in caption.lower() or mention.replace(" ", "_").lower() in caption.lower()


def run_caption(
    engine,
    dataset: RecognitionDataset,
    methods: list[str],
    run_dir: str | Path,
    *,
    subjects: list[str] | None = None,
    max_subjects: int | None = None,
    max_photos: int | None = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    recipe: str = "fast",
    pool_fn: Callable[[], Any] | None = None,
    max_new_tokens: int = 48,
    caption_tokens: int = 96,
    summary_tokens: int = 48,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    reuse_from: list[Path] | None = None,
) -> dict:
    train, data = train or TrainConfig(), data or DataConfig()
    chosen = dataset.select(subjects, max_subjects)
    protocol = {"task": "caption", "version": PROTOCOL_VERSION, "dataset": dataset.name, "seed": seed, "split": dataset.split(),
                "query": CAPTION_QUERY, "max_new_tokens": max_new_tokens, "max_photos": max_photos, "model": engine.fingerprint(),
                "recipe": recipe, "train": asdict(train), "data": asdict(data), "caption_tokens": caption_tokens, "summary_tokens": summary_tokens}
    store = RunStore(run_dir, protocol)
    ctx = EvalContext(engine, store.dir, train, data, recipe_name=recipe, pool_fn=pool_fn, caption_tokens=caption_tokens, summary_tokens=summary_tokens, progress=progress, reuse_from=list(reuse_from or []))
    done = store.done()
    for mname in methods:
        method = make_method(mname)
        for subject in chosen:
            if (mname, subject.name) in done:
                echo(f"{mname} / {subject.name}: done earlier, skipped")
                continue
            photos = subject.test[:max_photos] if max_photos else subject.test
            record: dict[str, Any] = {"task": "caption", "method": mname, "subject": subject.name}
            t0 = time.perf_counter()
            try:
                info = method.prepare(ctx, subject)
                p = method.prompting(ctx, subject)
                t1 = time.perf_counter()
                captions = [engine.chat(p.ask(CAPTION_QUERY), image=ph, concepts=p.concepts, max_new_tokens=max_new_tokens) for ph in photos]
                hits = [names_subject(c, p.mention) for c in captions]
                record |= {"info": info, "mention": p.mention, "photos": [ph.name for ph in photos], "captions": captions, "hits": hits,
                           "recall": sum(hits) / len(hits) if hits else None,
                           "prepare_seconds": round(t1 - t0, 2), "caption_seconds": round(time.perf_counter() - t1, 2)}
            except Unavailable as e:
                record["unavailable"] = str(e)
            finally:
                method.release(ctx, subject)
            store.append(record)
            echo(f"{mname} / {subject.name}: " + (f"unavailable ({record['unavailable']})" if "unavailable" in record
                                                   else f"recall {record['recall']:.2f} over {len(photos)} captions"))
    results = aggregate_caption(store.records(), methods, [s.name for s in chosen])
    results |= {"protocol": {k: v for k, v in protocol.items() if k != "split"}, "notes": dataset.notes, "run_dir": str(store.dir)}
    return results


def aggregate_caption(records: list[dict], methods: list[str], subjects: list[str]) -> dict:
    latest = {(r["method"], r["subject"]): r for r in records if r.get("task") == "caption"}
    per_subject: dict[str, dict] = {m: {} for m in methods}
    overall, examples = {}, {}
    for m in methods:
        hits: list[bool] = []
        k = 0
        for s in subjects:
            r = latest.get((m, s))
            if r is None:
                continue
            if "unavailable" in r:
                per_subject[m][s] = {"unavailable": r["unavailable"]}
                continue
            per_subject[m][s] = {"recall": r["recall"], "n": len(r["hits"])}
            hits += r["hits"]
            k += 1
            examples.setdefault(m, []).extend(
                {"subject": s, "photo": ph, "caption": c, "hit": h} for ph, c, h in list(zip(r["photos"], r["captions"], r["hits"]))[:1])
        overall[m] = {"subjects": k, "n": len(hits), "recall": sum(hits) / len(hits) if hits else None}
    return {"task": "caption", "methods": methods, "subjects": subjects, "overall": overall, "per_subject": per_subject, "examples": examples}
