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
    index: int  # row in the feature table (the photo)
    question: str
    answer: str
    kind: str


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
