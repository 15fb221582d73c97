"""Augmented views of a photo: crop, flip and colour jitter, deterministic per (view, seed).

The recipe trains on several views of each of the user's few photos instead of repeating the same
pixels (the frozen vision tower sees a slightly different photo each time, so the concept cannot
latch on to one exact set of features), and calibrates its yes/no threshold on views it never
trained on. View 0 is the photo itself; views from :data:`SCENE_VIEW_BASE` on are fixed crops of it
(:data:`yollava.data.scene.SCENE_CROPS`: parts of a user's photo without the subject, trained as negatives).
"""

from __future__ import annotations

import random

from PIL import Image, ImageEnhance, ImageOps

from .scene import scene_crop

#: views at or above this id are kept for calibration; training views stay below it
CALIBRATION_VIEW_BASE = 1000
#: views at or above this id are scene crops: ``SCENE_CROPS[view - SCENE_VIEW_BASE]``, no random augmentation
SCENE_VIEW_BASE = 2000


def augmented_view(image: Image.Image, view: int, seed: int = 0, min_scale: float = 0.5) -> Image.Image:
    """A random resized crop (``min_scale``-1 of the area, aspect 3/4-4/3), a coin-flip mirror and
    brightness/contrast/saturation jitter of +-25 %; the same ``(view, seed)`` gives the same view."""
    if view == 0:
        return image
    if view >= SCENE_VIEW_BASE:
        return scene_crop(image, view - SCENE_VIEW_BASE)
    rng = random.Random(f"{seed}:{view}")
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(min_scale, 1.0)
        aspect = rng.uniform(3 / 4, 4 / 3)
        cw, ch = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = w, h
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(rng.uniform(0.75, 1.25))
    return out
