"""Extra photos made from the pool for pocket v2's tasks, and their vision feature maps (cached).

* **instance pairs**: two different views of one photo (random crop, flip, colour, scale, pasted on another
  photo's background) — "the same one" — and, for each, a view of *another* photo of the same class (Caltech) or of
  the nearest photo by features (ImageNet, one photo per class) — "not the same one";
* **collages**: two photos of unrelated classes side by side in one square frame — "where is the {class}?".

Every view is made from photos of one split only, so held-out views come from held-out photos. Rows are described
in ``views.json`` (kind, the pool rows it was made from, split, answer facts) and their 7x7 feature maps are stored
like the pool's (:func:`~.data.prepare_feature_maps`).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

SIZE = 224


def square(img: Image.Image, size: int = SIZE) -> Image.Image:
    """Centre crop to a square, resized to ``size`` (what the model sees of a photo)."""
    return ImageOps.fit(img.convert("RGB"), (size, size), Image.BICUBIC)


def augment(img: Image.Image, rng: random.Random, size: int = SIZE) -> Image.Image:
    """A random view of a photo: crop keeping 40-100 % of it, mirror half the time, brightness / contrast / colour
    moved by up to 25 %."""
    img = img.convert("RGB")
    w, h = img.size
    area = w * h * rng.uniform(0.4, 1.0)
    ratio = rng.uniform(3 / 4, 4 / 3)
    cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    view = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(rng.uniform(0.75, 1.25))
    return square(view, size)


def paste(img: Image.Image, background: Image.Image, rng: random.Random, size: int = SIZE) -> Image.Image:
    """The photo scaled to 45-75 % of the frame and pasted at a random place on another photo."""
    bg = square(background, size)
    side = int(size * rng.uniform(0.45, 0.75))
    fg = square(img, side)
    bg.paste(fg, (rng.randint(0, size - side), rng.randint(0, size - side)))
    return bg


def collage(left: Image.Image, right: Image.Image, size: int = SIZE) -> Image.Image:
    """Two photos side by side in one square frame (each a centre strip of half the width)."""
    out = Image.new("RGB", (size, size))
    out.paste(ImageOps.fit(left.convert("RGB"), (size // 2, size), Image.BICUBIC), (0, 0))
    out.paste(ImageOps.fit(right.convert("RGB"), (size // 2, size), Image.BICUBIC), (size // 2, 0))
    return out


def plan_views(feats: dict, rng: random.Random, n_pairs: dict[str, int], n_collages: dict[str, int]) -> list[dict]:
    """What to make, per split: ``{"kind": "pair", "split", "photo", "other"}`` (one instance-matching item: views of
    ``photo`` twice, and of ``other``) and ``{"kind": "collage", "split", "left", "right"}``."""
    from .data import overlapping

    photos = feats["photos"]
    glob = F.normalize(feats["pooled"][:, -1].float(), dim=-1)
    plan = []
    for split, n in n_pairs.items():
        named = [i for i, p in enumerate(photos) if p.split == split and p.name]
        by_class = defaultdict(list)
        for i in named:
            by_class[photos[i].name].append(i)
        rng.shuffle(named)
        for i in named[:n]:
            same = [j for j in by_class[photos[i].name] if j != i]
            if same:
                other = rng.choice(same)
            else:  # the nearest photo of this split by features
                sims = glob[named] @ glob[i]
                order = [named[k] for k in sims.argsort(descending=True).tolist()]
                other = next(j for j in order if j != i)
            plan.append({"kind": "pair", "split": split, "photo": i, "other": other})
    for split, n in n_collages.items():
        named = [i for i, p in enumerate(photos) if p.split == split and p.name]
        while sum(v["kind"] == "collage" and v["split"] == split for v in plan) < n:
            a, b = rng.sample(named, 2)
            if not overlapping(photos[a].name, photos[b].name):
                plan.append({"kind": "collage", "split": split, "left": a, "right": b})
    return plan


def render_views(feats: dict, plan: list[dict], seed: int):
    """Yield ``(row description, image)`` for every view of ``plan``: a pair gives three rows (``view`` 0 and 1 of the
    photo, then the other photo), a collage one."""
    from ..images import load_image

    photos = feats["photos"]
    rng = random.Random(seed)
    backgrounds = [i for i, p in enumerate(photos) if p.source == "cc12m" or p.name is None]
    for k, item in enumerate(plan):
        if item["kind"] == "pair":
            img, other = load_image(photos[item["photo"]].path), load_image(photos[item["other"]].path)
            bg = load_image(photos[rng.choice(backgrounds)].path)
            first = augment(img, rng)
            second = paste(augment(img, rng), bg, rng) if rng.random() < 0.4 else augment(img, rng)
            yield {"item": k, "role": "view0"}, first
            yield {"item": k, "role": "view1"}, second
            yield {"item": k, "role": "other"}, augment(other, rng)
        else:
            yield {"item": k, "role": "collage"}, collage(load_image(photos[item["left"]].path), load_image(photos[item["right"]].path))


def prepare_views(feats: dict, work: Path, seed: int = 0, n_pairs: dict | None = None, n_collages: dict | None = None,
                  batch_size: int = 32) -> Path:
    """Make the views, run the frozen vision tower over them once and cache ``views.safetensors`` (``fmaps`` (N, 1280,
    7, 7) fp16) + ``views.json`` (the plan and one row description per view)."""
    from safetensors.torch import save_file

    from ..vision.efficientnet import EfficientNetLite, preprocess

    n_pairs = n_pairs or {"train": 1500, "heldout_seen": 100, "heldout_unseen": 100}
    n_collages = n_collages or {"train": 500, "heldout_seen": 40}
    plan = plan_views(feats, random.Random(seed), n_pairs, n_collages)
    vision = EfficientNetLite()
    rows, maps, batch = [], [], []
    t0 = time.time()

    def flush():
        with torch.no_grad():
            maps.append(vision.feature_map(preprocess([img for _, img in batch])).half())
        rows.extend(r for r, _ in batch)
        batch.clear()
        print(f"\r{len(rows)} views, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)

    for row, img in render_views(feats, plan, seed + 1):
        batch.append((row, img))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    print(file=sys.stderr)
    work.mkdir(parents=True, exist_ok=True)
    save_file({"fmaps": torch.cat(maps).contiguous()}, work / "views.safetensors")
    (work / "views.json").write_text(json.dumps({"seed": seed, "plan": plan, "rows": rows}))
    print(f"wrote {len(rows)} views to {work / 'views.safetensors'} in {time.time() - t0:.0f} s")
    return work / "views.safetensors"


def load_views(work: Path, grid: int) -> dict:
    """``{"pooled": (N, grid*grid+1, 1280), "plan": [...], "rows": [...], "row_of": {(item, role): row}}``."""
    from safetensors.torch import load_file

    from ..models.pocket.model import pool_feature_map

    path = work / "views.safetensors"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python scripts/pocket/prepare.py --views` first")
    fmaps = load_file(path)["fmaps"]
    meta = json.loads((work / "views.json").read_text())
    pooled = torch.cat([pool_feature_map(fmaps[i : i + 256].float(), grid).half() for i in range(0, len(fmaps), 256)])
    row_of = {(r["item"], r["role"]): k for k, r in enumerate(meta["rows"])}
    return {"pooled": pooled, "plan": meta["plan"], "rows": meta["rows"], "row_of": row_of}

