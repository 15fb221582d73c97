"""One training sample: a question about a concept, its answer, and a photo or none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: "caption": "Describe this photo." about a training photo, answered with the base model's caption naming the subject
#: "other_caption": "Describe this photo." about a negative photo, answered with the base model's own caption (the
#: subject is not in it, so it is not named: recipe ``myvlm`` teaches with them when not to name the subject)
#: "scene_negative": a crop of one of the user's own photos where the subject is not (:mod:`yollava.data.scene`)
#: "given_negative": a photo the user gave as one without the subject (the same places; their other concepts' photos)
KINDS = ("positive", "negative", "hard_negative", "scene_negative", "given_negative", "conversation", "caption", "other_caption")


@dataclass(frozen=True)
class Sample:
    """``question``/``answer`` name the subject by its identifier (``<bo>``); the concept's
    ``<bo> is <bo_1>...<bo_k>.`` prefix and the photo marker are added by the engine, not here.
    ``image`` is ``None`` for text-only conversations (the photo is dropped on purpose).
    ``view`` > 0 means an augmented view of ``image`` (:func:`yollava.data.augment.augmented_view`);
    ``calibration`` samples are never trained on: they pick the epoch and set the yes/no threshold."""

    question: str
    answer: str
    image: Path | None = None
    kind: str = "conversation"
    view: int = 0
    calibration: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"sample kind must be one of {KINDS}, not {self.kind!r}")
        if self.view and self.image is None:
            raise ValueError("an augmented view needs a photo")

    @property
    def is_recognition(self) -> bool:
        return self.kind not in ("conversation", "caption", "other_caption")

    @property
    def is_positive(self) -> bool:
        return self.kind == "positive"
