"""``benchmarks/who.py`` scores cached features and P(yes) offline: its answers must be the product's
(``YoLLaVA.who``) for every mode and strategy, and its metrics must count right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from yollava import who as W
from yollava.concepts import load_concept

from .test_who import PaletteEmbedder, SUBJECTS, engine, photo, store_subjects, world  # noqa: F401

_spec = importlib.util.spec_from_file_location("who_bench", Path(__file__).parents[1] / "benchmarks" / "who.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_prf_counts():
    assert bench.prf(3, 1, 2) == {"precision": 0.75, "recall": 0.6, "f1": 0.6667, "tp": 3, "fp": 1, "fn": 2}
    assert bench.prf(0, 0, 0)["f1"] == 0.0


def test_offline_scoring_equals_who(engine, world, tmp_path):  # noqa: F811
    store_subjects(engine, world)
    concepts = {n: load_concept(engine.concepts_dir, n, engine.fingerprint()) for n in SUBJECTS}
    items = [{"key": f"{s}", "path": str(world["subjects"][s][5]), "truth": [s], "llm": True} for s in SUBJECTS]
    two = photo(tmp_path / "c.jpg", ["red", "blue", "red"], seed=5)  # not symmetric: no ties in retrieval
    items.append({"key": "collage_000", "path": str(two), "truth": ["blue", "red"], "llm": True})
    feats = {q["key"]: W.embed_query(PaletteEmbedder(), q["path"]) for q in items}
    llm = {(q["key"], n): p for q in items for n, p in zip(SUBJECTS, engine.concept_yes_probabilities(q["path"], list(SUBJECTS)))}
    index = bench.concept_index(concepts, PaletteEmbedder.fingerprint)
    for mode in ("head", "yollava", "fused"):
        for strategy in ("retrieve", "all"):
            for q in items:
                ranked, _ = bench.predict(mode, strategy, q, concepts, index, feats, llm, top_k=1)
                got = engine.who(q["path"], mode=mode, strategy=strategy, top_k=1)
                assert [n for n, _, present in ranked if present] == got.names, (mode, strategy, q["key"])
                assert [n for n, _, _ in ranked] == [f.concept for f in got.checked]
    m = bench.accuracy_metrics("head", "all", items, concepts, index, feats, llm, top_k=1)
    assert m["n_single"] == 3 and m["n_collage"] == 1 and m["top1"] == 1.0
    assert m["collages"]["recall"] == 1.0 and m["collage_both_found"] == 1.0
    assert m["all"]["tp"] == 5
