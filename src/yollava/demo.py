"""The main job: personalise <bo> from its 10 official photos, then show what the model now knows."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .data.builder import expand_photos
from .engine import YoLLaVA
from .paths import default_data_root
from .personalize import DataConfig, personalize
from .train import TrainConfig, recognition_metrics


def run_demo(engine: YoLLaVA, data_root: Path | None = None, train: TrainConfig | None = None, data: DataConfig | None = None, console: Console | None = None) -> dict:
    console = console or Console()
    root = Path(data_root or default_data_root()) / "yollava"
    train_photos = expand_photos([root / "bo" / "train"])
    test_photos = expand_photos([root / "bo" / "test"])
    others = [p for p in expand_photos([root / "one_image_per_concept"]) if p.stem != "bo"][: len(test_photos)]
    console.rule("[bold]1. personalise <bo> from its photos")
    console.print(f"{len(train_photos)} photos of <bo> from {root / 'bo' / 'train'}; negatives from the image pool")
    result = personalize(engine, "bo", train_photos, train=train, data=data, overwrite=True)
    console.print(f"saved <bo> in {engine.concepts_dir} ({result.seconds:.0f}s of training, best epoch {result.best_epoch})")

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
    return {"metrics": m, "answer": answer, "seconds": result.seconds}
