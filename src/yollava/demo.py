"""The main job: personalise <bo> from its 10 official photos, then show what the model now knows."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .data.builder import expand_photos
from .engine import Engine
from .paths import default_data_root
from .personalize import load_pool, personalize
from .recipes import Recipe, resolve_recipe
from .train import recognition_metrics


def run_demo(engine: Engine, data_root: Path | None = None, recipe: Recipe | str | None = None, console: Console | None = None) -> dict:
    """``recipe``: a :class:`Recipe` or its name (default ``"fast"``)."""
    console = console or Console()
    recipe = resolve_recipe(recipe)
    data_root = Path(data_root or default_data_root())
    root = data_root / "yollava"
    train_photos = expand_photos([root / "bo" / "train"])
    test_photos = expand_photos([root / "bo" / "test"])
    others = [p for p in expand_photos([root / "one_image_per_concept"]) if p.stem != "bo"][: len(test_photos)]
    console.rule("[bold]1. personalise <bo> from its photos")
    console.print(f"{len(train_photos)} photos of <bo> from {root / 'bo' / 'train'}; negatives from the image pool; recipe {recipe.name!r}")
    t0 = time.perf_counter()
    pool = load_pool([data_root / "pool"]) if recipe.data.needs_pool else None
    result = personalize(engine, "bo", train_photos, recipe=recipe, pool=pool, overwrite=True)
    total = time.perf_counter() - t0
    console.print(f"saved <bo> in {engine.concepts_dir}: {total:.0f}s end to end, {result.seconds:.0f}s of it training "
                  f"in {result.concept.meta['metrics']['precision']} "
                  f"(epoch kept: {result.best_epoch}, threshold {engine.bank['bo'].threshold:.2f})")

    console.rule("[bold]2. Can you see if <bo> is in this photo?")
    photos = test_photos + others
    scores = engine.yes_probabilities("bo", photos)
    threshold = engine.bank["bo"].threshold
    table = Table("photo", "truly <bo>?", "answer", "P(yes)")
    for path, p in zip(photos, scores):
        table.add_row(f"{path.parent.name}/{path.name}", "yes" if path in test_photos else "no", "Yes" if p >= threshold else "No", f"{p:.3f}")
    console.print(table)
    labels = [p in test_photos for p in photos]
    m = recognition_metrics(labels, scores, threshold)
    console.print(f"weighted accuracy {m['weighted_accuracy']:.3f} (positives {m['positive_accuracy']:.2f}, "
                  f"negatives {m['negative_accuracy']:.2f}, threshold {threshold:.2f}), ROC-AUC {m['auc']:.3f}")

    console.rule("[bold]3. text-only: no photo given")
    question = "What kind of animal is <bo>? Describe <bo>."
    answer = engine.chat(question, max_new_tokens=60)
    console.print(f"[bold]Q:[/bold] {question}\n[bold]A:[/bold] {answer}")
    return {"metrics": m, "answer": answer, "seconds": result.seconds, "personalize_seconds": total}
