"""Look at a training set: counts per kind and a contact sheet of positives and their hard negatives."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidImageError
from ..images import load_image
from .training_set import TrainingSet

THUMB = 160


def summary(training_set: TrainingSet) -> dict:
    """Sample counts per kind, plus photo counts and the hard negatives' similarity range."""
    scores = [h.score for h in training_set.hard_negatives]
    return {
        "name": training_set.name,
        "samples": len(training_set.samples),
        **training_set.counts,
        "photos": len(training_set.positives),
        "skipped_photos": len(training_set.skipped),
        "hard_negative_similarity": (
            {"min": min(scores), "mean": sum(scores) / len(scores), "max": max(scores)} if scores else None
        ),
    }


def _thumb(path: Path):
    try:
        img = load_image(path)
    except InvalidImageError:
        return None
    img.thumbnail((THUMB, THUMB))
    return img


def contact_sheet(training_set: TrainingSet, out_png: str | Path, max_per_row: int = 8) -> Path:
    """A PNG grid: each row one positive photo, then its top hard negatives titled with their
    cosine similarity to it. Missing or unreadable photos are drawn as empty cells."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    rows = training_set.positives or []
    cols = 1 + max((len(training_set.hard_negatives_for(p)[:max_per_row]) for p in rows), default=0)
    fig = Figure(figsize=(1.7 * cols, 1.9 * max(len(rows), 1)))
    axes = fig.subplots(max(len(rows), 1), cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, pos in enumerate(rows):
        cells = [(pos, f"{training_set.name}\n{pos.name}"[:40])]
        cells += [(h.path, f"{h.score:.3f}") for h in training_set.hard_negatives_for(pos)[:max_per_row]]
        for c, (path, title) in enumerate(cells):
            img = _thumb(path)
            if img is not None:
                axes[r, c].imshow(img)
            axes[r, c].set_title(title, fontsize=7, color="green" if c == 0 else "black")
    fig.suptitle(f"{training_set.name}: positives (left) and their nearest hard negatives (cosine)", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    return out_png
