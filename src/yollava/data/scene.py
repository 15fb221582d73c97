"""Scene negatives: parts of the user's own photos where the subject is not.

A concept trained on a user's photos against pool photos can learn the *kind of photo* instead of the subject: phone
photos of a home against ImageNet and Caltech. On MyVLM (pocket v2, ``fast``) the other subjects' photos, taken in
the same homes, score +0.05 above the pool photos the threshold was set on, and the subjects' own test photos -0.03
below their calibration views (``scripts/domain_shift.py``; ``scripts/recipe_dev.py --scene`` measures the lever on
dev subjects).
Crops of the training photos that leave the subject out are negatives from exactly the user's domain: "this room,
without the subject, is No".

Where the subject is comes from the photos themselves: it is what they share. Each photo is cut into
:data:`SCENE_CROPS` (halves and quarters); a crop's *subject score* is its mean over the other photos of its best
embedding cosine to any of their crops (and to the other photos whole). The crop of a photo with the lowest score is
its scene crop, kept only when it scores at least ``margin`` below the photo's best crop (a subject that fills the
frame leaves no part without it). Needs two photos or more; any embedder with ``embed(list[PIL.Image]) -> (n, d)``
unit-norm rows (the pool's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import load_image

#: crop boxes as fractions (left, top, right, bottom) of the photo: four halves, then four quarters
SCENE_CROPS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0),
    (0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0),
)
#: how much lower (cosine) than the photo's best crop a scene crop must score
SCENE_MARGIN = 0.05


@dataclass(frozen=True)
class SceneCrop:
    photo: Path
    crop: int  # index into SCENE_CROPS
    score: float  # its subject score (lower: less like the subject)
    best: float  # the photo's best crop's subject score


def crop_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    """Pixel box of ``SCENE_CROPS[crop]`` in a photo of ``size`` (width, height)."""
    if not 0 <= crop < len(SCENE_CROPS):
        raise ValueError(f"scene crop index must be in 0..{len(SCENE_CROPS) - 1}, not {crop}")
    w, h = size
    l, t, r, b = SCENE_CROPS[crop]
    return round(l * w), round(t * h), max(round(l * w) + 1, round(r * w)), max(round(t * h) + 1, round(b * h))


def scene_crop(image, crop: int):
    """The PIL crop ``crop`` of ``image`` (a path or PIL image)."""
    im = load_image(image)
    return im.crop(crop_box(im.size, crop))


def padded_square(image):
    """``image`` centred on a mid-grey square: embedders centre-crop to a square, which would cut off the ends of a
    half-photo crop, and a subject there with them."""
    side = max(image.size)
    out = Image.new("RGB", (side, side), (128, 128, 128))
    out.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
    return out


def subject_scores(photos: list[Path], embedder) -> np.ndarray:
    """``(n_photos, n_crops)`` subject scores (see the module docstring); every crop and photo is embedded whole
    (:func:`padded_square`)."""
    if len(photos) < 2:
        raise ValueError("scene crops need at least 2 photos of the subject (what the photos share is the subject)")
    loaded = [load_image(p) for p in photos]
    images = [padded_square(im) for im in loaded]
    crops = [padded_square(im.crop(crop_box(im.size, c))) for im in loaded for c in range(len(SCENE_CROPS))]
    vectors = np.asarray(embedder.embed(crops + images), dtype=np.float32)
    n, k = len(images), len(SCENE_CROPS)
    per_crop = vectors[: n * k].reshape(n, k, -1)
    whole = vectors[n * k :]
    scores = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        # each other photo: its crops and itself whole; best match per other photo, mean over them
        targets = np.concatenate([per_crop[others], whole[others][:, None, :]], axis=1)  # (n-1, k+1, d)
        sims = np.einsum("cd,okd->cok", per_crop[i], targets)  # (k, n-1, k+1)
        scores[i] = sims.max(axis=2).mean(axis=1)
    return scores


def choose_scene_crops(photos: list[Path], embedder, per_photo: int = 1, margin: float = SCENE_MARGIN) -> list[SceneCrop]:
    """Up to ``per_photo`` scene crops of each photo, lowest subject score first, each ``margin`` below the photo's
    best crop; a photo whose subject seems to fill it gives none."""
    if per_photo < 0:
        raise ValueError(f"per_photo must be >= 0, not {per_photo}")
    if per_photo == 0 or len(photos) < 2:
        return []
    scores = subject_scores(photos, embedder)
    out = []
    for p, row in zip(photos, scores):
        best = float(row.max())
        for c in np.argsort(row)[:per_photo]:
            if row[c] <= best - margin:
                out.append(SceneCrop(Path(p), int(c), float(row[c]), best))
    return out
