"""A concept's training set: the samples plus how they were chosen, saved and loaded as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .samples import KINDS, Sample
from .pool import atomic_write_json

FORMAT = "yollava-training-set"
VERSION = 1


@dataclass(frozen=True)
class HardNegative:
    """A pool photo retrieved for the positive ``anchor`` with cosine similarity ``score``."""

    path: Path
    score: float
    anchor: Path


@dataclass
class TrainingSet:
    name: str  # the identifier, e.g. "<bo>"
    samples: list[Sample]
    positives: list[Path] = field(default_factory=list)
    easy_negatives: list[Path] = field(default_factory=list)
    hard_negatives: list[HardNegative] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable user photos
    config: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(s.kind for s in self.samples)
        return {k: c.get(k, 0) for k in KINDS}

    def hard_negatives_for(self, anchor: Path) -> list[HardNegative]:
        return [h for h in self.hard_negatives if h.anchor == anchor]

    # ---- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "counts": self.counts,
            "config": self.config,
            "positives": [str(p) for p in self.positives],
            "easy_negatives": [str(p) for p in self.easy_negatives],
            "hard_negatives": [{"path": str(h.path), "score": h.score, "anchor": str(h.anchor)} for h in self.hard_negatives],
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
            "samples": [
                {"question": s.question, "answer": s.answer, "image": None if s.image is None else str(s.image), "kind": s.kind}
                | ({"view": s.view} if s.view else {}) | ({"calibration": True} if s.calibration else {})
                for s in self.samples
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainingSet:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a yollava training set (format {d.get('format')!r})")
        if d.get("version", 0) > VERSION:
            raise ValueError(f"training set version {d['version']} is newer than this yollava ({VERSION})")
        return cls(
            name=d["name"],
            samples=[Sample(s["question"], s["answer"], None if s["image"] is None else Path(s["image"]), s["kind"],
                            int(s.get("view", 0)), bool(s.get("calibration", False))) for s in d["samples"]],
            positives=[Path(p) for p in d["positives"]],
            easy_negatives=[Path(p) for p in d["easy_negatives"]],
            hard_negatives=[HardNegative(Path(h["path"]), float(h["score"]), Path(h["anchor"])) for h in d["hard_negatives"]],
            skipped=[(Path(s["path"]), s["reason"]) for s in d.get("skipped", [])],
            config=d.get("config", {}),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingSet:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
