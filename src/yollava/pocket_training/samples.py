"""Training samples for ``pocket``: questions about pool photos whose answers come from real labels and pixels.

Stage 1 (alignment): captions made from class labels ("A photo of a {class}.") and colour facts.
Stage 2 (visual instruction tuning), balanced Yes/No everywhere so that saying "Yes" scores 50 %:

  * presence: "Is there a {class} in this photo?" Yes / No, half the time No, and then mostly a
    class that looks alike (nearest class centroids of the EfficientNet features), else a random one;
  * generic yes/no about the subject: "Is this an animal?", "Is there a dog in this photo?" ...;
  * naming: "What is in this photo? Answer with a single word or phrase." / "What is this?";
  * colours: "What is the main colour in this photo?", "Is there a lot of {colour} in this photo?".

Moved here from ``scripts/pocket/train_stage{1,2}.py`` unchanged.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .data import (ANIMAL_ONLY_NEGATIVES, CATEGORIES, COLOURS, article, cap, class_similarity, class_sources,
                   hard_negatives, main_colour)


@dataclass
class Sample:
    index: int | tuple[int, ...]  # row(s) in the feature table: the photo, or the photos in prompt order (() = none)
    question: str
    answer: str
    kind: str

    @property
    def rows(self) -> tuple[int, ...]:
        return (self.index,) if isinstance(self.index, int) else tuple(self.index)


CAPTION_QUESTIONS = ["What is in this photo?", "Describe this photo briefly.", "What does this photo show?"]


def stage1_samples(feats, rng: random.Random, n_imagenet: int, n_caltech: int, n_colour: int) -> list[Sample]:
    photos = feats["photos"]
    train_ids = [i for i, p in enumerate(photos) if p.split == "train"]
    imagenet = [i for i in train_ids if photos[i].source == "imagenet"]
    caltech = [i for i in train_ids if photos[i].source == "caltech101"]
    samples = []
    for i in rng.sample(imagenet, min(n_imagenet, len(imagenet))) + rng.sample(caltech, min(n_caltech, len(caltech))):
        samples.append(Sample(i, rng.choice(CAPTION_QUESTIONS), f"A photo of {article(photos[i].name)}.", "caption"))
    for i in rng.sample(train_ids, n_colour):
        shares = feats["colours"][i]
        order = np.argsort(-shares)
        top = [COLOURS[order[0]]] + ([COLOURS[order[1]]] if shares[order[1]] >= 0.2 else [])
        samples.append(Sample(i, "What colours are in this photo?", f"Mostly {' and '.join(top)}.", "colour"))
    return samples


PRESENCE = [
    "Is there {a} in this photo?",
    "Can you see if {a} is in this photo? Answer with a single word or phrase.",  # Yo'LLaVA's query
]
NOT_ANIMAL = {"Garfield", "Snoopy", "brontosaurus toy", "stegosaurus toy", "face"}


def stage2_samples(feats, n: int, rng: random.Random, n_hard: int = 10) -> list[Sample]:
    photos, colours = feats["photos"], feats["colours"]
    train_ids = [i for i, p in enumerate(photos) if p.split == "train"]
    by_class = defaultdict(list)
    for i in train_ids:
        if photos[i].name:
            by_class[photos[i].name].append(i)
    names, sim = class_similarity(feats, train_only=True)
    hard = hard_negatives(names, sim, n_hard, class_sources(photos))
    labelled = [i for i in train_ids if photos[i].name]
    by_cat = {c: [i for i in labelled if c in photos[i].categories] for c in CATEGORIES}
    animals = [i for i in labelled if "animal" in photos[i].categories]
    not_animals = [i for i in labelled if "animal" not in photos[i].categories and photos[i].name not in NOT_ANIMAL]

    def photo_of_class():  # half uniform over classes (ImageNet-heavy), half over photos (Caltech-heavy)
        return rng.choice(by_class[rng.choice(names)]) if rng.random() < 0.5 else rng.choice(labelled)

    samples = []
    while len(samples) < n:
        r = rng.random()
        if r < 0.40:  # presence of a named class
            i = photo_of_class()
            name = photos[i].name
            if rng.random() < 0.5:
                asked, yes = name, True
            else:
                asked, yes = (rng.choice(hard[name]) if rng.random() < 0.7 else rng.choice(names)), False
                if asked == name or asked.lower() in name.lower() or name.lower() in asked.lower():
                    continue
            q = rng.choice(PRESENCE).format(a=article(asked))
            samples.append(Sample(i, q, "Yes" if yes else "No", "presence_yes" if yes else "presence_no"))
        elif r < 0.55:  # generic yes/no about the subject
            cat = rng.choice(list(CATEGORIES))
            yes = rng.random() < 0.5
            if yes:
                i = rng.choice(by_cat[cat])
            else:
                pool = animals if cat in ANIMAL_ONLY_NEGATIVES else (not_animals if cat == "animal" else labelled)
                i = rng.choice(pool)
                if cat in photos[i].categories or (cat == "person" and photos[i].name in NOT_ANIMAL):
                    continue
            samples.append(Sample(i, CATEGORIES[cat][0], "Yes" if yes else "No", f"category_{'yes' if yes else 'no'}"))
        elif r < 0.80:  # naming
            i = photo_of_class()
            if rng.random() < 0.6:
                samples.append(Sample(i, "What is in this photo? Answer with a single word or phrase.", cap(photos[i].name), "name_short"))
            else:
                samples.append(Sample(i, "What is this?", f"This is {article(photos[i].name)}.", "name_sentence"))
        else:  # colours, from the pixels (cc12m photos too)
            i = rng.choice(train_ids)
            main = main_colour(colours[i])
            if rng.random() < 0.5:
                if main is None:
                    continue
                samples.append(Sample(i, "What is the main colour in this photo?", cap(main), "colour_main"))
            else:
                yes = rng.random() < 0.5
                cands = [c for k, c in enumerate(COLOURS) if (colours[i][k] >= 0.3 if yes else colours[i][k] < 0.03)]
                if not cands:
                    continue
                samples.append(Sample(i, f"Is there a lot of {rng.choice(cands)} in this photo?", "Yes" if yes else "No",
                                      f"colour_{'yes' if yes else 'no'}"))
    return samples


# ---- pocket v2 --------------------------------------------------------------------------------
SAME_QUESTIONS = [
    "Is the object in the second photo the same one as in the first? Answer with a single word or phrase.",
    "Do these two photos show the very same object? Answer with a single word or phrase.",
]
WHERE_QUESTION = "Where is the {name} in this photo: on the left or on the right? Answer with a single word or phrase."
DESCRIBE_QUESTIONS = ["Describe this photo.", "Describe this photo briefly.", "What is in this photo?"]
DESCRIBE_CLASS = "Describe what {a} looks like in one sentence."


def describe_answer(name: str, description: str | None, shares: np.ndarray) -> str:
    """"A photo of a {class}. {the LLM's own sentence about the class} Mostly {colours}." (colours from the pixels)."""
    order = np.argsort(-shares)
    top = [COLOURS[order[0]]] + ([COLOURS[order[1]]] if shares[order[1]] >= 0.2 else [])
    text = f"A photo of {article(name)}."
    if description:
        text += " " + description
    return text + f" The main colours are {' and '.join(top)}." if len(top) > 1 else text + f" It is mostly {top[0]}."


def v2_samples(feats: dict, views: dict, descriptions: dict[str, str], n: int, rng: random.Random,
               split: str = "train") -> list[Sample]:
    """pocket v2's mix, balanced Yes/No everywhere: v1's stage 2 (presence with look-alike classes, generic yes/no,
    naming, colours) for 45 %, instance matching of two photos for 28 %, where-on-a-collage for 8 %, descriptions in
    the LLM's own words for 12 % and the same descriptions asked without a photo for 4 % (so text-only answers stay
    the LLM's own). View rows are offset by the number of pool rows (one table: pool, then views)."""
    photos = feats["photos"]
    offset = len(photos)
    pairs = [k for k, v in enumerate(views["plan"]) if v["kind"] == "pair" and v["split"] == split]
    collages = [k for k, v in enumerate(views["plan"]) if v["kind"] == "collage" and v["split"] == split]
    row = lambda k, role: offset + views["row_of"][k, role]  # noqa: E731
    described = [i for i, p in enumerate(photos) if p.split == split and p.name and p.name in descriptions]
    base = stage2_samples(feats, int(n * 0.45) + 1, rng)
    out = list(base[: int(n * 0.45)])
    while len(out) < n:
        r = rng.random()
        if r < 0.51:  # instance matching
            k = rng.choice(pairs)
            same = rng.random() < 0.5
            a, b = row(k, "view0"), row(k, "view1" if same else "other")
            if rng.random() < 0.5:
                a, b = b, a
            out.append(Sample((a, b), rng.choice(SAME_QUESTIONS), "Yes" if same else "No", "same_yes" if same else "same_no"))
        elif r < 0.65:  # where on a collage
            k = rng.choice(collages)
            side = rng.choice(["left", "right"])
            name = photos[views["plan"][k][side]].name
            out.append(Sample((row(k, "collage"),), WHERE_QUESTION.format(name=name), cap(side), "where"))
        elif r < 0.93:  # describe, in the LLM's own words
            i = rng.choice(described)
            name = photos[i].name
            out.append(Sample(i, rng.choice(DESCRIBE_QUESTIONS), describe_answer(name, descriptions[name], feats["colours"][i]), "describe"))
        else:  # the same words without a photo: text-only answers stay the LLM's own
            name = rng.choice(sorted(descriptions))
            out.append(Sample((), DESCRIBE_CLASS.format(a=article(name)), descriptions[name], "text_only"))
    return out
