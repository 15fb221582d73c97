"""Photos in, concept file out: validate, build the paper's training set, train, save."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from .concepts import validate_name
from .data.builder import build_training_set, expand_photos
from .data.training_set import TrainingSet
from .engine import YoLLaVA
from .errors import InvalidConceptNameError, NotEnoughPhotosError
from .images import file_sha256, load_image
from .paths import cache_home, default_data_root
from .recipes import DataConfig  # noqa: F401  (its home is yollava.recipes; this import keeps old imports working)
from .train import ConceptTrainer, TrainConfig, TrainerCallback, TrainResult

log = logging.getLogger(__name__)


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
    """The training set; conversation answers are synthesised by the model itself (``reference``), batched,
    whatever runtime chat uses, so they are cached under the model's fingerprint alone."""
    def answer_many(pairs: list[tuple[str, Path]]) -> list[str]:
        return engine.chat_many(pairs, max_new_tokens=data.conversation_tokens, reference=True)

    needs_pool = data.needs_pool
    return build_training_set(
        name,
        photos,
        pool if pool is not None or not needs_pool else load_pool(),
        answer_many=answer_many if data.conversations else None,
        seed=seed,
        model_fingerprint=json.dumps(engine.fingerprint(), sort_keys=True),
        **data.builder_options(),
    )


def personalize(
    engine: YoLLaVA,
    name: str,
    photos: list[str | Path],
    *,
    recipe=None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    pool=None,
    training_set: TrainingSet | None = None,
    save: bool = True,
    overwrite: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    visual=None,
    on_recognition_ready=None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Learn concept ``name`` from ``photos`` and (by default) save it in ``engine.concepts_dir``.

    ``recipe``: a :class:`yollava.recipes.Recipe` or its name (default ``"fast"``); ``train`` / ``data``
    replace its settings (the concept JSON then names the recipe ``"<name>-modified"``).

    ``visual``: the concept's visual signature (prototype + concept head, :mod:`yollava.who`): ``True`` fits
    it first (about a second) and, when saving, stores a recognition-only concept in
    ``concepts_dir/.pending`` so the concept recognises while it trains; a ready
    :class:`~yollava.who.VisualSignature` is used as it is; ``False`` skips it. Default: fitted when
    ``save``. ``on_recognition_ready(signature)`` is called once the signature exists. ``callbacks``: the
trainer's :class:`~yollava.train.TrainerCallback` objects (progress, a lock around each step, ...)."""
    from .recipes import resolve_recipe
    validate_name(name)
    if name in engine.bank.reserved_tokens or f"<{name}>" in engine.bank.reserved_tokens:
        raise InvalidConceptNameError(f"concept name {name!r} clashes with an existing token of the model")
    target = engine.concepts_dir / f"{name}.json"
    if save and target.exists() and not overwrite:
        raise InvalidConceptNameError(f"a concept <{name}> already exists in {engine.concepts_dir} (remove it or pass overwrite)")
    recipe = resolve_recipe(recipe, train, data)
    train, data = recipe.train, recipe.data
    paths = check_photos(photos)
    signature, pool = _instant_signature(engine, name, paths, save if visual is None else visual, pool, data, train, recipe, save,
                                   training_set is None)
    if signature is not None and on_recognition_ready is not None:
        on_recognition_ready(signature)
    if training_set is None:
        training_set = build_data(engine, name, paths, data, pool, seed=train.seed)
        training_set.save(cache_home() / "data" / name / "training_set.json")  # for `yollava data show NAME`
    trainer = ConceptTrainer(engine, name, train, checkpoint_dir=checkpoint_dir or engine.concepts_dir / ".checkpoints", progress=progress,
                             callbacks=callbacks)
    result = trainer.fit(training_set.samples)
    result.concept.meta.update(
        recipe=recipe.to_dict(),
        source_photos=[{"file": p.name, "sha256": file_sha256(p)} for p in paths],
        data={k: v for k, v in training_set.config.items() if k not in ("model_fingerprint", "positive_sha256")},
    )
    if signature is not None:
        from .who import attach_signature

        attach_signature(result.concept, signature)
        result.concept.meta["stage"] = "trained"
    if save:
        engine.save_concept(name)
        trainer.clear_checkpoint()
        if signature is not None:
            from .who import remove_pending

            remove_pending(engine, name)
    return result


def _instant_signature(engine, name, paths, visual, pool, data, train, recipe, save, needs_data):
    """(the concept's visual signature (see ``personalize``'s ``visual``), saved as a pending concept when
    saving; the pool, loaded here when the recipe needs one anyway)."""
    if visual is False or visual is None:
        return None, pool
    from .who import VisualSignature, save_pending, signature_for_photos

    if isinstance(visual, VisualSignature):
        signature = visual
    else:
        if pool is None and needs_data and data.needs_pool:
            pool = load_pool(progress=False)
        signature = signature_for_photos(engine, paths, pool, seed=train.seed)
    if save:
        save_pending(engine, name, signature, train.k, train.seed, meta={
            "recipe": recipe.to_dict(), "source_photos": [{"file": p.name, "sha256": file_sha256(p)} for p in paths]})
    return signature, pool
