"""Photos in, concept file out: validate, build the paper's training set, train, save."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .concepts import validate_name
from .data.builder import build_training_set, expand_photos
from .data.training_set import TrainingSet
from .engine import YoLLaVA
from .errors import InvalidConceptNameError, NotEnoughPhotosError
from .images import file_sha256, load_image
from .paths import cache_home, default_data_root
from .train import ConceptTrainer, TrainConfig, TrainResult

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    category: str = "object"  # "person" or "object" (pets count as objects, as in the paper)
    n_easy_negatives: int = 100
    n_hard_negatives: int = 100
    hard_negatives: bool = True
    conversations: bool = True
    #: photos the base model is asked the attribute questions about (None: all; the official <bo> data used 4)
    conversation_photos: int | None = None
    conversation_tokens: int = 48


def load_pool(pool_dirs: list[Path] | None = None, index_dir: Path | None = None, progress: bool = True):
    """Open the pool index, building/updating it from ``pool_dirs`` (default: the shared pool)."""
    from .data.pool import ImagePool

    dirs = pool_dirs or [default_data_root() / "pool"]
    return ImagePool.build_or_update(dirs, index_dir, progress=progress)


def check_photos(photos: list[str | Path]) -> list[Path]:
    paths = expand_photos(photos)
    if not paths:
        raise NotEnoughPhotosError("no photos given: personalisation needs at least 1 photo of the subject (3-10 work best)")
    for p in paths:
        load_image(p)  # raises InvalidImageError naming the file
    if len(paths) < 3:
        log.warning("only %d photo(s): the method is meant for 3-10", len(paths))
    return paths


def build_data(engine: YoLLaVA, name: str, photos: list[Path], data: DataConfig, pool=None, seed: int = 0) -> TrainingSet:
    def answer(question: str, image: Path) -> str:
        return engine.chat(question, image=image, max_new_tokens=data.conversation_tokens)

    needs_pool = data.n_easy_negatives > 0 or (data.hard_negatives and data.n_hard_negatives > 0)
    return build_training_set(
        name,
        photos,
        pool if pool is not None or not needs_pool else load_pool(),
        answer_fn=answer if data.conversations else None,
        category=data.category,
        n_easy_negatives=data.n_easy_negatives,
        n_hard_negatives=data.n_hard_negatives,
        conversations=data.conversations,
        hard_negatives=data.hard_negatives,
        conversation_photos=data.conversation_photos,
        seed=seed,
        model_fingerprint=json.dumps(engine.fingerprint(), sort_keys=True),
    )


def personalize(
    engine: YoLLaVA,
    name: str,
    photos: list[str | Path],
    *,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    pool=None,
    training_set: TrainingSet | None = None,
    save: bool = True,
    overwrite: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Learn concept ``name`` from ``photos`` and (by default) save it in ``engine.concepts_dir``."""
    validate_name(name)
    if name in engine.bank.reserved_tokens or f"<{name}>" in engine.bank.reserved_tokens:
        raise InvalidConceptNameError(f"concept name {name!r} clashes with an existing token of the model")
    target = engine.concepts_dir / f"{name}.json"
    if save and target.exists() and not overwrite:
        raise InvalidConceptNameError(f"a concept <{name}> already exists in {engine.concepts_dir} (remove it or pass overwrite)")
    train, data = train or TrainConfig(), data or DataConfig()
    paths = check_photos(photos)
    if training_set is None:
        training_set = build_data(engine, name, paths, data, pool, seed=train.seed)
        training_set.save(cache_home() / "data" / name / "training_set.json")  # for `yollava data show NAME`
    trainer = ConceptTrainer(engine, name, train, checkpoint_dir=checkpoint_dir or engine.concepts_dir / ".checkpoints", progress=progress)
    result = trainer.fit(training_set.samples)
    result.concept.meta.update(
        source_photos=[{"file": p.name, "sha256": file_sha256(p)} for p in paths],
        data={k: v for k, v in training_set.config.items() if k not in ("model_fingerprint", "positive_sha256")},
    )
    if save:
        engine.save_concept(name)
        trainer.clear_checkpoint()
    return result
