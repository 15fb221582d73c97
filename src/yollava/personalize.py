"""Photos in, concept out: the one way a concept is made, in steps.

:class:`ConceptPipeline` runs them in order; the CLI (``personalize``), ``many.py`` (several subjects trained
together), the server's training jobs and the evaluation's ``yollava`` method all use it, each calling the
steps it needs:

1. :meth:`~ConceptPipeline.check_name` and :meth:`~ConceptPipeline.check_photos`: clear errors before any work;
2. :meth:`~ConceptPipeline.signature`: the visual signature (prototype + concept head, ``yollava.who``), about a
   second: the concept recognises from here on;
3. :meth:`~ConceptPipeline.training_set`: the paper's training data (``data.builder``), the base model's
   conversation answers given by an **answerer** (default: :meth:`~ConceptPipeline.answer`, batched generation;
   the server passes one that takes the model lock per chunk so chats interleave);
4. :meth:`~ConceptPipeline.train`: the concept's tokens (``train.ConceptTrainer`` with the caller's callbacks),
   which ends by calibrating the yes/no threshold (``yollava.calibration``);
5. :meth:`~ConceptPipeline.describe`: what the concept file records about how it was made; then the caller
   saves it (``engine.save_concept``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from .concepts import Concept, validate_name
from .data.builder import build_training_set, expand_photos
from .data.training_set import TrainingSet
from .engine import Engine
from .errors import InvalidConceptNameError, NotEnoughPhotosError, PhotoListError
from .images import file_sha256, load_image
from .paths import cache_home, default_data_root
from .recipes import DataConfig, Recipe, resolve_recipe
from .train import ConceptTrainer, TrainConfig, TrainerCallback, TrainResult

log = logging.getLogger(__name__)

#: the base model answering several (question, photo) pairs, in order
Answerer = Callable[[list[tuple[str, Path]]], list[str]]


def load_pool(pool_dirs: list[Path] | None = None, index_dir: Path | None = None, progress: bool = True):
    """Open the pool index, building/updating it from ``pool_dirs`` (default: the shared pool)."""
    from .data.pool import ImagePool

    dirs = pool_dirs or [default_data_root() / "pool"]
    return ImagePool.build_or_update(dirs, index_dir, progress=progress)


def check_photos(photos: Sequence[str | Path]) -> list[Path]:
    """The photos (folders expanded), each one readable; at least one (3-10 work best)."""
    paths = expand_photos(photos)
    if not paths:
        raise NotEnoughPhotosError("no photos given: personalisation needs at least 1 photo of the subject (3-10 work best)")
    for p in paths:
        load_image(p)  # raises InvalidImageError naming the file
    if len(paths) < 3:
        log.warning("only %d photo(s): the method is meant for 3-10", len(paths))
    return paths


def check_negative_photos(negatives: Sequence[str | Path], photos: Sequence[Path]) -> list[Path]:
    """The photos without the subject (folders expanded), each readable; one that is also among ``photos`` is an error
    (a photo cannot be both)."""
    paths = expand_photos(negatives)
    if not paths and len(negatives):
        raise PhotoListError(f"no photos found in {', '.join(map(str, negatives))} (the photos without the subject)")
    own = set(photos)
    for p in paths:
        if p in own:
            raise PhotoListError(f"{p} is given both as a photo of the subject and as a photo without it")
        load_image(p)  # raises InvalidImageError naming the file
    return paths


class ConceptPipeline:
    """Makes concepts for ``engine`` with one recipe (a :class:`~yollava.recipes.Recipe` or its name, default
    ``"fast"``; ``train``/``data`` replace its settings); ``engine`` may be None for a training set without
    conversations (``yollava data build``). ``pool``: the image pool negatives come from (default:
    ``pool_loader()``, the shared pool, loaded the first time a step needs it). ``answerer``: see the module."""

    def __init__(self, engine: Engine | None, recipe: Recipe | str | None = None, *, train: TrainConfig | None = None,
                 data: DataConfig | None = None, pool=None, pool_loader: Callable[[], object] | None = None,
                 answerer: Answerer | None = None, progress: bool = True):
        self.engine = engine
        self.recipe = resolve_recipe(recipe, train, data)
        self._pool = pool
        self._pool_loader = pool_loader or (lambda: load_pool(progress=progress))
        self.answerer = answerer or self.answer
        self.progress = progress

    @property
    def train_config(self) -> TrainConfig:
        return self.recipe.train

    @property
    def data_config(self) -> DataConfig:
        return self.recipe.data

    @property
    def pool(self):
        """The image pool (loaded on first use), or None when the recipe uses no negatives and none was given."""
        if self._pool is None and self.data_config.needs_pool:
            self._pool = self._pool_loader()
        return self._pool

    # ---- 1. checks -------------------------------------------------------------------------------
    def check_name(self, name: str, save: bool = True, overwrite: bool = False) -> str:
        validate_name(name)
        bank = self.engine.bank
        if name in bank.reserved_tokens or f"<{name}>" in bank.reserved_tokens:
            raise InvalidConceptNameError(f"concept name {name!r} clashes with an existing token of the model")
        if save and (self.engine.concepts_dir / f"{name}.json").exists() and not overwrite:
            raise InvalidConceptNameError(f"a concept <{name}> already exists in {self.engine.concepts_dir} (remove it or pass overwrite)")
        return name

    check_photos = staticmethod(check_photos)

    # ---- 2. the visual signature ------------------------------------------------------------------
    def signature(self, photos: Sequence[Path], embedder=None, negatives: Sequence[Path] = ()):
        """Prototype + concept head on ``embedder`` (default: the engine's, ``yollava.who.embedder_for``), with the
        pool's negatives when the recipe uses a pool (or one was given) and the user's ``negatives`` (photos without
        the subject)."""
        from .who import embedder_for, fit_signature

        pool = self.pool
        if pool is None and self.train_config.injection == "vision":  # MyVLM's head is the toggle: it learns from negatives
            pool = self._pool = self._pool_loader()
        return fit_signature(photos, embedder or embedder_for(self.engine), pool, seed=self.train_config.seed, negatives=negatives)

    # ---- 3. the training set ----------------------------------------------------------------------
    def answer(self, pairs: list[tuple[str, Path]]) -> list[str]:
        """The base model's answers, batched and greedy, from the model itself (``exact``: not a faster
        generation runtime), so they are cached under its fingerprint alone."""
        return self.engine.chat_many(pairs, max_new_tokens=self.data_config.conversation_tokens, exact=True)

    def training_set(self, name: str, photos: Sequence[Path], *, cache_dir: str | Path | None = None,
                     negatives: Sequence[Path] = ()) -> TrainingSet:
        """The paper's training set for ``name``; conversation answers come from :attr:`answerer` and are cached in
        ``cache_dir`` (default ``$YOLLAVA_CACHE/answers``) by photo, question and model. ``negatives``: the user's
        photos without the subject, trained as "No" beside the pool's negatives."""
        data = self.data_config
        if self.engine is None and data.asks_base_model:
            raise ValueError("conversations and captions need a model to answer them (pass an engine, or use a recipe without "
                             "conversations and caption photos)")
        fingerprint = json.dumps(self.engine.fingerprint(), sort_keys=True) if self.engine is not None else ""
        return build_training_set(
            name, photos, self.pool, answer_many=self.answerer if data.asks_base_model else None, seed=self.train_config.seed,
            cache_dir=cache_dir, model_fingerprint=fingerprint, negative_photos=negatives, **data.builder_options(),
        )

    # ---- 4. training (ends with calibration) ------------------------------------------------------
    def trainer(self, name: str, *, checkpoint_dir: str | Path | None = None, callbacks: Sequence[TrainerCallback] = ()) -> ConceptTrainer:
        return ConceptTrainer(self.engine, name, self.train_config, checkpoint_dir=checkpoint_dir or self.engine.concepts_dir / ".checkpoints",
                              progress=self.progress, callbacks=callbacks)

    def train(self, name: str, training_set: TrainingSet, *, checkpoint_dir: str | Path | None = None,
              callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
        return self.trainer(name, checkpoint_dir=checkpoint_dir, callbacks=callbacks).fit(training_set.samples)

    def train_many(self, sets: dict[str, TrainingSet]) -> dict[str, TrainResult]:
        """Several concepts trained together in shared batches (one prefix cache)."""
        trainer = self.trainer("+".join(sorted(sets))[:60])
        return trainer.fit_many({name: ts.samples for name, ts in sets.items()})

    # ---- 5. what the concept file records ---------------------------------------------------------
    def describe(self, concept: Concept, photos: Sequence[Path], training_set: TrainingSet, signature=None) -> Concept:
        """Record the recipe, the source photos (name + sha256), the data settings and the visual signature."""
        concept.meta.update(
            recipe=self.recipe.to_dict(),
            source_photos=[{"file": p.name, "sha256": file_sha256(p)} for p in photos],
            data={k: v for k, v in training_set.config.items() if k not in ("model_fingerprint", "positive_sha256")},
        )
        if signature is not None:
            from .who import attach_signature

            attach_signature(concept, signature)
            concept.meta["stage"] = "trained"
        return concept

    # ---- all steps --------------------------------------------------------------------------------
    def run(self, name: str, photos: Sequence[str | Path], *, save: bool = True, overwrite: bool = False,
            training_set: TrainingSet | None = None, checkpoint_dir: str | Path | None = None, visual=None,
            on_recognition_ready=None, callbacks: Sequence[TrainerCallback] = (), negatives: Sequence[str | Path] = ()) -> TrainResult:
        """Every step; see :func:`personalize` for the arguments."""
        self.check_name(name, save, overwrite)
        paths = self.check_photos(photos)
        negative_paths = check_negative_photos(negatives, paths)
        if self.train_config.injection == "vision" and not visual:
            visual = True  # a MyVLM-style concept follows a photo only when its head finds it there: it needs one
        signature = self._signature_step(name, paths, save if visual is None else visual, save, negative_paths)
        if signature is not None and on_recognition_ready is not None:
            on_recognition_ready(signature)
        if training_set is None:
            training_set = self.training_set(name, paths, negatives=negative_paths)
            training_set.save(cache_home() / "data" / name / "training_set.json")  # for `yollava data show NAME`
        trainer = self.trainer(name, checkpoint_dir=checkpoint_dir, callbacks=callbacks)
        result = trainer.fit(training_set.samples)
        self.describe(result.concept, paths, training_set, signature)
        if save:
            self.engine.save_concept(name)
            trainer.clear_checkpoint()
            if signature is not None:
                from .who import remove_pending

                remove_pending(self.engine, name)
        return result

    def _signature_step(self, name: str, paths: list[Path], visual, save: bool, negatives: Sequence[Path] = ()):
        """``visual``: True fits the signature (saved as a pending, recognition-only concept when saving), a
        ready signature is used as it is, False/None skips it."""
        if visual is False or visual is None:
            return None
        from .who import VisualSignature, save_pending

        signature = visual if isinstance(visual, VisualSignature) else self.signature(paths, negatives=negatives)
        if save:
            save_pending(self.engine, name, signature, self.train_config.k, self.train_config.seed, meta={
                "recipe": self.recipe.to_dict(), "source_photos": [{"file": p.name, "sha256": file_sha256(p)} for p in paths]})
        return signature


def personalize(
    engine: Engine,
    name: str,
    photos: Sequence[str | Path],
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
    negatives: Sequence[str | Path] = (),
) -> TrainResult:
    """Learn concept ``name`` from ``photos`` and (by default) save it in ``engine.concepts_dir``: every step of
    :class:`ConceptPipeline`.

    ``recipe``: a :class:`yollava.recipes.Recipe` or its name (default ``"fast"``); ``train`` / ``data``
    replace its settings (the concept JSON then names the recipe ``"<name>-modified"``).

    ``visual``: the concept's visual signature (prototype + concept head, :mod:`yollava.who`): ``True`` fits
    it first (about a second) and, when saving, stores a recognition-only concept in
    ``concepts_dir/.pending`` so the concept recognises while it trains; a ready
    :class:`~yollava.who.VisualSignature` is used as it is; ``False`` skips it. Default: fitted when
    ``save``. ``on_recognition_ready(signature)`` is called once the signature exists. ``callbacks``: the
    trainer's :class:`~yollava.train.TrainerCallback` objects (progress, a lock around each step, ...).

    ``negatives``: photos (files or folders) *without* the subject — the same rooms with other things in them, the
    photos of your other concepts: trained as "No" by the concept and its head, beside the pool's photos, which
    cannot show your rooms (see README, Evaluation: the domain shortcut)."""
    pipeline = ConceptPipeline(engine, recipe, train=train, data=data, pool=pool, progress=progress)
    return pipeline.run(name, photos, save=save, overwrite=overwrite, training_set=training_set, checkpoint_dir=checkpoint_dir,
                        visual=visual, on_recognition_ready=on_recognition_ready, callbacks=callbacks, negatives=negatives)
