"""Recognition datasets: which photos train a subject, which are its positives and its negatives.

- ``bo``: the Yo'LLaVA subject ``<bo>``: trains on ``yollava/bo/train`` (10 photos), positives are
  ``yollava/bo/test`` (10 photos), negatives are the other subjects' photos in
  ``yollava/one_image_per_concept`` (38 files) plus photos held out of the image pool (chosen at run
  time, see :func:`hold_out_pool_negatives`, and removed from the pool the training-set builder sees).
- ``myvlm``: ``myvlm/<subject>/*.jpg`` (29 subjects), a fixed seeded split per subject (default 4
  training photos, the rest test); every subject's test photos are negatives for every other subject,
  plus its COCO hard negatives (``myvlm/hard_negatives_coco/<subject>/``) where present.
- any folder ``DIR/<subject>/*.jpg``: the same protocol as ``myvlm`` (optional
  ``DIR/<subject>/description.txt`` for the text-description baseline, optional
  ``DIR/hard_negatives*/<subject>/`` for extra negatives).

Cross-subject negatives always come from *all* subjects of the dataset, whichever subset is
evaluated, so a subject's test set does not depend on ``--subjects``/``--max-subjects``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.negatives import NEAR_DUPLICATE, nearest_to_each
from ..images import list_images
from ..paths import default_data_root

SKIP_DIRS = {"annotations"}


def concept_name_for(subject: str) -> str:
    """A valid concept name for a subject folder name (letters, digits, '_' and '-', <= 64)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", subject).strip("-_") or "subject"
    if not name[0].isalnum():
        name = "s" + name
    return name[:64]


def plain_name(subject: str) -> str:
    """How a person would say it: ``billy_dog`` -> ``billy dog``."""
    return re.sub(r"[_\-]+", " ", subject).strip()


def _strip_identifier(text: str, identifier: str, plain: str) -> str:
    """Descriptions name the subject ``<bo>`` or ``<sks>``; prompts without a concept use the plain name."""
    return text.replace(identifier, plain).replace("<sks>", plain).replace("sks", plain).strip()


@dataclass
class Subject:
    name: str
    train: list[Path]
    test: list[Path]
    negatives: list[Path] = field(default_factory=list)  # extra negatives of this subject only
    description: str | None = None  # human-written; names the subject by ``plain``
    category: str = "object"  # "person" or "object" (picks the conversation questions)
    #: photos without the subject given to training as "No" (``personalize --negatives``): see
    #: :meth:`RecognitionDataset.with_library_negatives`
    train_negatives: list[Path] = field(default_factory=list)

    @property
    def concept(self) -> str:
        return concept_name_for(self.name)

    @property
    def plain(self) -> str:
        return plain_name(self.name)


@dataclass
class RecognitionDataset:
    name: str
    subjects: list[Subject]
    shared_negatives: list[Path] = field(default_factory=list)  # negatives for every subject
    notes: str = ""
    #: negatives held out of the image pool per subject (filled at run time)
    pool_negatives: dict[str, list[Path]] = field(default_factory=dict)

    def subject(self, name: str) -> Subject:
        for s in self.subjects:
            if s.name == name:
                return s
        raise KeyError(f"no subject {name!r} in dataset {self.name} (has: {', '.join(s.name for s in self.subjects)})")

    def test_set(self, subject: Subject, max_negatives: int | None = None, seed: int = 0) -> tuple[list[Path], list[bool]]:
        """Positives (its test photos) then negatives (other subjects' test photos, shared, its own), no repeats.
        ``max_negatives``: a seeded sample of that many negatives (per subject), to make slow models affordable."""
        seen: set[Path] = set()
        paths, labels = [], []

        def add(ps, label):
            for p in ps:
                if p not in seen:
                    seen.add(p)
                    paths.append(p)
                    labels.append(label)

        add(subject.test, True)
        own = {p for p in subject.train} | set(subject.test)
        for other in self.subjects:
            if other.name != subject.name:
                add([p for p in other.test if p not in own], False)
        add([p for p in self.shared_negatives if p not in own], False)
        add(subject.negatives, False)
        add(self.pool_negatives.get(subject.name, []), False)
        n_pos = sum(labels)
        if max_negatives is not None and len(paths) - n_pos > max_negatives:
            keep = sorted(random.Random(f"{seed}:{subject.name}:negatives").sample(range(n_pos, len(paths)), max_negatives))
            paths = paths[:n_pos] + [paths[i] for i in keep]
            labels = labels[:n_pos] + [False] * len(keep)
        return paths, labels

    def split(self) -> dict:
        return {s.name: {"train": [p.name for p in s.train], "test": [p.name for p in s.test], "extra_negatives": len(s.negatives),
                         **({"train_negatives": len(s.train_negatives)} if s.train_negatives else {})} for s in self.subjects}

    def with_library_negatives(self) -> RecognitionDataset:
        """The same dataset where each subject trains with every other subject's *training* photos as photos
        without it (``personalize --negatives``): a user whose library holds the other subjects. Test photos are
        untouched, so no test photo is ever trained on; the other subjects' test photos stay its negatives."""
        from dataclasses import replace

        subjects = [replace(s, train_negatives=[p for o in self.subjects if o.name != s.name for p in o.train])
                    for s in self.subjects]
        return replace(self, subjects=subjects, notes=self.notes + "; each subject trains with the other subjects' training "
                                                                  "photos as photos without it (library negatives)")

    def select(self, subjects: list[str] | None = None, max_subjects: int | None = None) -> list[Subject]:
        chosen = [self.subject(n) for n in subjects] if subjects else list(self.subjects)
        return chosen[:max_subjects] if max_subjects else chosen


# ---- loaders ---------------------------------------------------------------------------------
def seeded_split(photos: list[Path], n_train: int, seed: int, key: str) -> tuple[list[Path], list[Path]]:
    """A fixed split of one subject's photos: ``n_train`` for training, the rest for testing.
    Seeded by ``(seed, subject)`` so it does not depend on which other subjects are present."""
    photos = sorted(photos)
    if len(photos) < 2:
        raise ValueError(f"subject {key!r} has {len(photos)} photo(s): need at least 2 (train and test)")
    n = min(n_train, len(photos) - 1)
    order = list(range(len(photos)))
    random.Random(f"{seed}:{key}").shuffle(order)
    train = sorted(photos[i] for i in order[:n])
    test = sorted(photos[i] for i in order[n:])
    return train, test


def _subject_dirs(root: Path) -> list[Path]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.startswith(".") or d.name in SKIP_DIRS or d.name.startswith("hard_negatives"):
            continue
        if list_images(d):
            out.append(d)
    return out


def _extra_negatives(root: Path, subject: str) -> list[Path]:
    out: list[Path] = []
    for d in sorted(root.glob("hard_negatives*")):
        if (d / subject).is_dir():
            out += list_images(d / subject)
    return out


def load_folder(root: str | Path, train_per_subject: int = 4, seed: int = 0, name: str | None = None,
                descriptions: dict[str, str] | None = None, categories: dict[str, str] | None = None) -> RecognitionDataset:
    """``root/<subject>/*.jpg`` with a seeded split per subject."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    subjects = []
    for d in _subject_dirs(root):
        train, test = seeded_split([p.resolve() for p in list_images(d)], train_per_subject, seed, d.name)
        desc = (descriptions or {}).get(d.name)
        if desc is None and (d / "description.txt").is_file():
            desc = (d / "description.txt").read_text(encoding="utf-8").strip()
        if desc is not None:
            desc = _strip_identifier(desc, f"<{d.name}>", plain_name(d.name))
        cat = (categories or {}).get(d.name, "object")
        subjects.append(Subject(d.name, train, test, [p.resolve() for p in _extra_negatives(root, d.name)], desc,
                                "person" if cat == "person" else "object"))
    if len(subjects) < 2:
        raise ValueError(f"{root}: found {len(subjects)} subject folder(s) with photos; need at least 2 (each is the others' negatives)")
    return RecognitionDataset(name or root.name, subjects,
                              notes=f"{root}: {len(subjects)} subjects, seeded split ({train_per_subject} training photos each, seed {seed}); "
                                    "negatives: every other subject's test photos + the subject's hard_negatives*/ photos")


def _concept_info(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    d = json.loads(path.read_text(encoding="utf-8"))
    return {k.strip("<>"): v for k, v in d.get("concept_dict", d).items()}


def myvlm_descriptions(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    info = _concept_info(root / "annotations" / "concept_info.repic_myvlm.json")
    desc = {}
    for k, v in info.items():
        text = v.get("info", "").strip()
        if not text:
            continue
        plain = plain_name(k)
        desc[k] = text if f"<{k}>" in text else f"Here is a description of {plain}: {text}"
    return desc, {k: v.get("category", "object") for k, v in info.items()}


def load_myvlm(data_root: str | Path | None = None, train_per_subject: int = 4, seed: int = 0) -> RecognitionDataset:
    root = Path(data_root or default_data_root()) / "myvlm"
    desc, cats = myvlm_descriptions(root)
    ds = load_folder(root, train_per_subject, seed, name="myvlm", descriptions=desc, categories=cats)
    ds.notes = (f"MyVLM objects ({len(ds.subjects)} subjects), seeded split: {train_per_subject} training photos per subject "
                f"(seed {seed}), the rest test; negatives: all other subjects' test photos + COCO hard negatives "
                "(hard_negatives_coco/<subject>/, 11 subjects)")
    return ds


def yollava_descriptions(data_root: str | Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Human-written descriptions of the Yo'LLaVA subjects: the short ``concept_info`` ones (paper's
    "~16 tokens" human description), falling back to Yo'Chameleon's detailed captions."""
    ann = Path(data_root or default_data_root()) / "yollava" / "annotations"
    info = _concept_info(ann / "concept_info.rap_database.json")
    desc = {k: v["info"] for k, v in info.items() if v.get("info")}
    cap_path = ann / "subject-detailed-captions.yochameleon.json"
    if cap_path.is_file():
        for k, v in json.loads(cap_path.read_text(encoding="utf-8")).items():
            desc.setdefault(k, v)
    return desc, {k: v.get("category", "object") for k, v in info.items()}


def load_bo(data_root: str | Path | None = None) -> RecognitionDataset:
    root = Path(data_root or default_data_root()) / "yollava"
    desc, cats = yollava_descriptions(data_root)
    train = [p.resolve() for p in list_images(root / "bo" / "train")]
    test = [p.resolve() for p in list_images(root / "bo" / "test")]
    others = [p.resolve() for p in list_images(root / "one_image_per_concept") if p.stem != "bo"]
    d = desc.get("bo")
    bo = Subject("bo", train, test, description=_strip_identifier(d, "<bo>", "bo") if d else None,
                 category="person" if cats.get("bo") == "person" else "object")
    return RecognitionDataset("bo", [bo], shared_negatives=others,
                              notes=f"<bo>: {len(train)} training photos (bo/train), {len(test)} positives (bo/test); negatives: "
                                    f"{len(others)} other subjects' photos (one_image_per_concept)")


def load_dataset(spec: str, data_root: str | Path | None = None, train_per_subject: int = 4, seed: int = 0) -> RecognitionDataset:
    if spec == "bo":
        return load_bo(data_root)
    if spec == "myvlm":
        return load_myvlm(data_root, train_per_subject, seed)
    return load_folder(spec, train_per_subject, seed)


# ---- negatives held out of the pool ------------------------------------------------------------
def hold_out_pool_negatives(pool, dataset: RecognitionDataset, subjects: list[Subject], n_random: int, n_hard: int,
                            seed: int = 0, near_duplicate: float = NEAR_DUPLICATE):
    """Take test negatives out of the image pool before any training set is built from it.

    ``n_random`` photos drawn with ``seed`` serve every subject; for each subject, ``n_hard`` more are the
    pool photos most similar to its *test* photos (near-duplicates of them, cosine > ``near_duplicate``,
    are skipped). All of them are removed from the returned training pool, so no method trains on a
    photo it is tested on. Returns the training pool."""
    if not n_random and not n_hard:
        return pool
    held: set[str] = set()
    shared = pool.sample_random(n_random, seed=seed + 7919) if n_random else []
    held |= {str(p) for p in shared}
    for s in subjects:
        chosen: list[Path] = list(shared)
        if n_hard and s.test:
            vecs, _, _ = pool.embed(s.test)
            banned = held | {str(p) for p in s.train} | {str(p) for p in s.test}
            extra = nearest_to_each(pool, vecs, n_hard, banned, near_duplicate)
            chosen += extra
            held |= {str(p) for p in extra}
        dataset.pool_negatives[s.name] = chosen
    return pool.without(held)
