"""Photos in, Yo'Chameleon concept out: a concept that answers about its subject *and draws it*, on a unified model.

The understanding data are Yo'LLaVA's (the same :class:`~yollava.personalize.ConceptPipeline` builds them, with the
recipe's data settings); the photos are also reconstruction targets; look-alikes retrieved from the pool index are
soft positives (:mod:`yollava.data.soft_positives`; the pool photos trained as "not <bo>" are never among them, so no
photo is both); :func:`yollava.train.yochameleon.train_unified` trains; the concept is saved like any other.

    yl = YoLLaVA.from_pretrained("path/to/Janus-Pro-1B")
    yl.personalize("bo", ["photos/bo/"], recipe="yochameleon")
    yl.generate_image("A photo of <bo> on a beach", n=4).images
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .data.soft_positives import retrieve_soft_positives
from .engine import Engine
from .engine.drawing import require_writer
from .images import file_sha256
from .recipes import DataConfig, Recipe, TrainConfig
from .train.yochameleon import UNIFIED_RECIPES, UnifiedTrainResult, YoChameleonConfig, get_unified_recipe, train_unified

#: the understanding data of the ``yochameleon`` recipes: Yo'LLaVA's as published (recognition sentences, 100 + 100
#: negatives, conversations about every photo)
UNDERSTANDING_DATA = DataConfig()


def is_unified_recipe(recipe) -> bool:
    """Whether ``recipe`` (a name) is one of the Yo'Chameleon recipes."""
    return isinstance(recipe, str) and recipe in UNIFIED_RECIPES


@dataclass
class UnifiedPersonalization:
    """What :func:`personalize_unified` made: the trained result, the understanding training set, the soft positives it
    drew from (path, cosine) and the saved concept's metadata file."""

    result: UnifiedTrainResult
    training_set: object = None
    soft_positives: list[tuple[Path, float]] = field(default_factory=list)
    saved: Path | None = None

    @property
    def concept(self):
        return self.result.concept


def personalize_unified(engine: Engine, name: str, photos: Sequence[str | Path], *, recipe: str = "yochameleon",
                        config: YoChameleonConfig | None = None, data: DataConfig | None = None, pool=None,
                        save: bool = True, overwrite: bool = False, progress: bool = True,
                        visual: bool | None = None) -> UnifiedPersonalization:
    """Learn ``name`` from ``photos`` with a Yo'Chameleon recipe (``yochameleon`` or one of its ablations) and, by
    default, save it in ``engine.concepts_dir``. ``config`` / ``data`` replace the recipe's training settings / its
    understanding data settings. ``pool``: the image pool (default: the shared pool, loaded when needed). ``visual``
    (default: when saving): fit the concept's visual signature (prototype + concept head, :mod:`yollava.who`), as
    :func:`yollava.personalize.personalize` does, so ``recognize`` and ``who`` answer with the head; unlike there, no
    recognition-only concept is stored while the tokens train."""
    from .personalize import ConceptPipeline

    require_writer(engine.adapter)  # before any work: this model must draw
    named = get_unified_recipe(recipe)
    cfg = config or named.train
    data = data or UNDERSTANDING_DATA
    understanding = Recipe(named.name, named.summary, "", TrainConfig(k=cfg.understanding_tokens, seed=cfg.seed), data)
    pipeline = ConceptPipeline(engine, understanding, pool=pool, progress=progress)
    pipeline.check_name(name, save, overwrite)
    paths = pipeline.check_photos(photos)
    training_set = pipeline.training_set(name, paths)
    soft: list[tuple[Path, float]] = []
    if cfg.soft_positives:
        pool = pipeline.pool if pool is None else pool
        if pool is None:
            pool = pipeline._pool_loader()
        vectors, _, _ = pool.embed(paths)
        trained_negatives = [*training_set.easy_negatives, *(h.path for h in training_set.hard_negatives)]
        soft = retrieve_soft_positives(pool, vectors, cfg.soft_positives, exclude=[*paths, *trained_negatives])
    signature = pipeline.signature(paths) if (save if visual is None else visual) else None
    samples = [s for s in training_set.samples if not s.calibration]
    result = train_unified(engine, name, samples, paths, [p for p, _ in soft], cfg,
                           recipe_name=named.name if config is None and data is None else f"{named.name}-modified")
    concept = result.concept
    concept.meta.update(
        source_photos=[{"file": p.name, "sha256": file_sha256(p)} for p in paths],
        data={k: v for k, v in training_set.config.items() if k not in ("model_fingerprint", "positive_sha256")},
        soft_positives=[{"file": p.name, "similarity": round(s, 4)} for p, s in soft],
        stage="trained",
    )
    concept.meta["recipe"] = {**concept.meta["recipe"], "understanding_data": replace(data).__dict__}
    if signature is not None:
        from .who import attach_signature

        attach_signature(concept, signature)
    saved = engine.save_concept(name) if save else None
    return UnifiedPersonalization(result, training_set, soft, saved)
