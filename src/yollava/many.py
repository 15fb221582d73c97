"""Personalise a folder of subjects at once: ``DIR/<name>/*.jpg`` -> one concept per subfolder.

Locally, all concepts train together in shared batches (one model in memory, one prefix cache), through the
steps of :class:`~yollava.personalize.ConceptPipeline`.
With ``ray_address``, the subjects are split into groups and each group trains on a Ray worker
that loads the model itself; the driver saves what comes back, so concept files are written in one
place, atomically, with the base model's fingerprint reported by the workers.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .concepts import Concept, save_concept, validate_name
from .data.builder import expand_photos
from .engine import Engine
from .errors import InvalidConceptNameError, NotEnoughPhotosError
from .personalize import ConceptPipeline
from .recipes import DataConfig
from .train import ConceptTrainer, TrainConfig

log = logging.getLogger(__name__)


def discover_subjects(folder: str | Path) -> dict[str, list[Path]]:
    """Subfolders holding photos, by name; a subfolder whose name is not a safe concept name is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotEnoughPhotosError(f"{folder} is not a folder of subject folders")
    subjects = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = expand_photos([sub])
        if photos:
            subjects[validate_name(sub.name)] = photos
    if not subjects:
        raise NotEnoughPhotosError(f"no subject folders with photos in {folder} (expected {folder}/<name>/*.jpg)")
    return subjects


def library_negatives(subjects: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Each subject's photos without it: every other subject's photos, less any that is also one of its own (the same
    photo filed under two subjects shows both)."""
    from .images import file_sha256

    sha = {p: file_sha256(p) for photos in subjects.values() for p in photos}
    own = {name: {sha[p] for p in photos} for name, photos in subjects.items()}
    return {name: [p for other, photos in subjects.items() if other != name for p in photos if sha[p] not in own[name]]
            for name in subjects}


def train_subjects(engine: Engine, subjects: dict[str, list[Path]], train: TrainConfig, data: DataConfig, pool=None, progress: bool = True,
                   recipe_name: str | None = None, signatures: bool = True,
                   negatives: dict[str, list[Path]] | None = None) -> dict[str, Concept]:
    """Each subject's training set, then all of them trained together, then (``signatures``) each one's visual
    signature: the steps of :class:`ConceptPipeline`. ``negatives``: per subject, photos without it
    (``personalize --negatives``; e.g. :func:`library_negatives`). Nothing is saved."""
    pipeline = ConceptPipeline(engine, recipe_name, train=train, data=data, pool=pool, progress=progress)
    for photos in subjects.values():
        pipeline.check_photos(photos)
    negatives = {name: list((negatives or {}).get(name, ())) for name in subjects}
    sets = {name: pipeline.training_set(name, photos, negatives=negatives[name]) for name, photos in subjects.items()}
    results = pipeline.train_many(sets)
    concepts = {}
    for name, result in results.items():
        signature = pipeline.signature(subjects[name], negatives=negatives[name]) if signatures else None
        concepts[name] = pipeline.describe(result.concept, subjects[name], sets[name], signature)
    return concepts


def _train_group_remote(model: str, concepts_dir: str, subjects: dict[str, list[str]], train: dict, data: dict, recipe_name: str,
                        negatives: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Runs on a Ray worker: returns plain tensors + metadata, and the base model's fingerprint."""
    engine = Engine.from_pretrained(model, concepts_dir)
    concepts = train_subjects(engine, {n: [Path(p) for p in ps] for n, ps in subjects.items()}, TrainConfig(**train), DataConfig(**data), progress=False,
                              recipe_name=recipe_name, negatives={n: [Path(p) for p in ps] for n, ps in (negatives or {}).items()})
    return {
        "fingerprint": engine.fingerprint(),
        "concepts": {n: {"input_rows": c.input_rows.detach().cpu(), "output_row": c.output_row.detach().cpu(), "meta": c.meta,
                         "extra_tensors": dict(c.extra_tensors)} for n, c in concepts.items()},
    }


def personalize_many(
    model: str,
    folder: str | Path,
    concepts_dir: str | Path | None = None,
    *,
    recipe=None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    overwrite: bool = False,
    ray_address: str | None = None,
    groups: int | None = None,
    engine: Engine | None = None,
    progress: bool = True,
    library: bool = False,
) -> dict[str, Path]:
    """Learn one concept per subfolder of ``folder`` and save them; returns name -> metadata path.
    ``recipe``: a :class:`yollava.recipes.Recipe` or its name (default ``"fast"``); ``train``/``data`` replace its settings.
    ``library``: each subject trains with all the other subjects' photos as photos without it (with Ray too,
    whichever worker group it lands in)."""
    from .recipes import resolve_recipe

    recipe = resolve_recipe(recipe, train, data)
    train, data = recipe.train, recipe.data
    subjects = discover_subjects(folder)
    negatives = library_negatives(subjects) if library else {}
    if engine is None and ray_address is None:
        engine = Engine.from_pretrained(model, concepts_dir)
    out_dir = Path(concepts_dir) if concepts_dir else (engine.concepts_dir if engine else None)
    if out_dir is None:
        from .paths import default_concepts_dir

        out_dir = default_concepts_dir()
    clashes = [n for n in subjects if (out_dir / f"{n}.json").exists()]
    if clashes and not overwrite:
        raise InvalidConceptNameError(f"concepts already exist in {out_dir}: {', '.join(clashes)} (remove them or pass overwrite)")

    if ray_address is None:
        concepts = train_subjects(engine, subjects, train, data, progress=progress, recipe_name=recipe.name, negatives=negatives)
        return {n: save_concept(c, out_dir, engine.fingerprint()) for n, c in concepts.items()}

    import ray

    ray.init(address=None if ray_address == "local" else ray_address, ignore_reinit_error=True, log_to_driver=False)
    n_groups = groups or max(1, min(len(subjects), int(ray.cluster_resources().get("CPU", 1))))
    names = sorted(subjects)
    batches = [names[i::n_groups] for i in range(n_groups) if names[i::n_groups]]
    remote = ray.remote(num_cpus=1)(_train_group_remote)
    futures = [
        remote.remote(model, str(out_dir), {n: [str(p) for p in subjects[n]] for n in batch}, asdict(train), asdict(data), recipe.name,
                      {n: [str(p) for p in negatives.get(n, ())] for n in batch})
        for batch in batches
    ]
    saved: dict[str, Path] = {}
    for result in ray.get(futures):
        concepts = {name: Concept(name, c["input_rows"], c["output_row"], c["meta"], c["extra_tensors"])
                    for name, c in result["concepts"].items()}
        for name, c in concepts.items():
            saved[name] = save_concept(c, out_dir, result["fingerprint"])
    return saved
