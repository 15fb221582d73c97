"""The main job: personalise <bo> from its 10 official photos, then show what the model now knows."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .data.builder import expand_photos
from .engine import YoLLaVA
from .paths import default_data_root
from .personalize import DataConfig, load_pool, personalize
from .train import TrainConfig, recognition_metrics


def quick_recipe() -> tuple[TrainConfig, DataConfig]:
    """The demo's default: the paper's data recipe, scaled down to run in minutes on 2 CPU cores
    (60 easy + 40 hard negatives, conversations about 4 photos as in the official <bo> data, at most
    6 epochs with early stopping on the held-back photos)."""
    return TrainConfig(epochs=6, patience=2), DataConfig(n_easy_negatives=60, n_hard_negatives=40, conversation_photos=4)


def paper_recipe() -> tuple[TrainConfig, DataConfig]:
    return TrainConfig(epochs=15), DataConfig()


def run_demo(engine: YoLLaVA, data_root: Path | None = None, train: TrainConfig | None = None, data: DataConfig | None = None, console: Console | None = None) -> dict:
    console = console or Console()
    data_root = Path(data_root or default_data_root())
    root = data_root / "yollava"
    train_photos = expand_photos([root / "bo" / "train"])
    test_photos = expand_photos([root / "bo" / "test"])
    others = [p for p in expand_photos([root / "one_image_per_concept"]) if p.stem != "bo"][: len(test_photos)]
    console.rule("[bold]1. personalise <bo> from its photos")
    console.print(f"{len(train_photos)} photos of <bo> from {root / 'bo' / 'train'}; negatives from the image pool")
    pool = load_pool([data_root / "pool"]) if (data or DataConfig()).n_easy_negatives or (data or DataConfig()).hard_negatives else None
    result = personalize(engine, "bo", train_photos, train=train, data=data, pool=pool, overwrite=True)
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
