"""Data for teaching ``pocket`` to see: the pool, its fixed split, facts from pixels, cached vision features.

Data: ``<data>/pool`` only (imagenet/, caltech101/, cc12m/); never the yollava/ or myvlm/ folders.
Split (fixed, by hashing names): ~10 % of class names are "unseen" (no photo and no mention in
training); of the seen classes' Caltech photos ~12 % are held out; ~10 % of cc12m is held out.
Moved here from ``scripts/pocket/common.py`` unchanged, except that the pool and the feature cache are
arguments (defaults: ``<data>/pool`` and ``<cache>/pocket-train``).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..paths import cache_home, default_data_root


def default_pool() -> Path:
    return default_data_root() / "pool"


def default_work_dir() -> Path:
    """Where the pool's vision features are cached (regenerable, never committed)."""
    return cache_home() / "pocket-train"


# ---- classes -------------------------------------------------------------------------------
CALTECH_NAMES = {
    "Faces": "face", "Faces_easy": "face", "Leopards": "leopard", "Motorbikes": "motorbike",
    "airplanes": "airplane", "car_side": "car", "cougar_body": "cougar", "cougar_face": "cougar face",
    "crocodile_head": "crocodile head", "flamingo_head": "flamingo head", "water_lilly": "water lily",
    "yin_yang": "yin yang symbol", "bass": "bass fish", "binocular": "pair of binoculars",
    "headphone": "pair of headphones", "buddha": "Buddha statue", "garfield": "Garfield",
    "snoopy": "Snoopy", "joshua_tree": "Joshua tree", "windsor_chair": "Windsor chair",
    "sea_horse": "seahorse", "brontosaurus": "brontosaurus toy", "stegosaurus": "stegosaurus toy",
}  # others: underscores -> spaces; BACKGROUND_Google (clutter) is skipped
CALTECH_ANIMALS = set(
    "Leopards ant bass beaver butterfly cougar_body cougar_face crab crayfish crocodile crocodile_head dalmatian "
    "dolphin dragonfly elephant emu flamingo flamingo_head gerenuk hawksbill hedgehog ibis kangaroo llama lobster "
    "mayfly nautilus octopus okapi panda pigeon platypus rhino rooster scorpion sea_horse starfish tick wild_cat".split()
)
# coarse categories for generic yes/no questions: name -> (question, ImageNet index ranges, Caltech folders)
CATEGORIES = {
    "animal": ("Is this an animal?", [(0, 397)], CALTECH_ANIMALS),
    "dog": ("Is there a dog in this photo?", [(151, 268)], {"dalmatian"}),
    "bird": ("Is there a bird in this photo?", [(7, 24), (80, 100), (127, 146)],
             {"emu", "flamingo", "flamingo_head", "ibis", "pigeon", "rooster"}),
    "fish": ("Is there a fish in this photo?", [(0, 6), (389, 397)], {"bass"}),
    "insect": ("Is there an insect in this photo?", [(300, 326)], {"ant", "butterfly", "dragonfly", "mayfly"}),
    "food": ("Is this food?", [(924, 967)], {"pizza", "strawberry"}),
    "person": ("Is there a person in this photo?", [(981, 983)], {"Faces", "Faces_easy"}),
}
# negatives for these are drawn only from other animals (object photos may contain people or dogs)
ANIMAL_ONLY_NEGATIVES = {"dog", "bird", "fish", "insect", "person"}

COLOURS = ["black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"]


def h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def is_unseen(name: str) -> bool:
    return h("class:" + name.lower()) % 10 == 0


@dataclass
class Photo:
    path: Path
    source: str  # imagenet | caltech101 | cc12m
    name: str | None  # class name shown in text (None for cc12m)
    categories: tuple[str, ...]
    split: str  # train | heldout_seen | heldout_unseen


def list_pool(pool: Path | None = None) -> list[Photo]:
    pool = pool or default_pool()
    photos = []
    for i, p in enumerate(sorted((pool / "imagenet").glob("*.jpg"))):
        name = p.stem.split("_", 1)[1].replace("_", " ")
        cats = tuple(c for c, (_, ranges, _) in CATEGORIES.items() if any(a <= i <= b for a, b in ranges))
        photos.append(Photo(p, "imagenet", name, cats, "heldout_unseen" if is_unseen(name) else "train"))
    for folder in sorted((pool / "caltech101").iterdir()):
        if folder.name == "BACKGROUND_Google" or not folder.is_dir():
            continue
        name = CALTECH_NAMES.get(folder.name, folder.name.replace("_", " "))
        cats = tuple(c for c, (_, _, cal) in CATEGORIES.items() if folder.name in cal)
        for p in sorted(folder.glob("*.jpg")):
            split = "heldout_unseen" if is_unseen(name) else ("heldout_seen" if h("photo:" + str(p.relative_to(pool))) % 8 == 0 else "train")
            photos.append(Photo(p, "caltech101", name, cats, split))
    for p in sorted((pool / "cc12m").glob("*.jpg")):
        photos.append(Photo(p, "cc12m", None, (), "heldout_seen" if h("photo:" + p.name) % 10 == 0 else "train"))
    return photos


# ---- facts from pixels: named colours ------------------------------------------------------
def colour_shares(img) -> np.ndarray:
    """Share of each named colour (COLOURS) among the pixels of the centre crop the model sees."""
    img = img.convert("RGB")
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    px = np.asarray(img.crop((left, top, left + s, top + s)).resize((48, 48)), dtype=np.float32).reshape(-1, 3) / 255
    counts = np.zeros(len(COLOURS))
    for r, g, b in px:
        counts[COLOURS.index(name_colour(r, g, b))] += 1
    return counts / counts.sum()


def name_colour(r: float, g: float, b: float) -> str:
    hue, sat, val = colorsys.rgb_to_hsv(r, g, b)
    hue *= 360
    if val < 0.2:
        return "black"
    if sat < 0.18:
        return "white" if val > 0.8 else ("gray" if val > 0.35 else "black")
    if hue < 15 or hue >= 345:
        return "pink" if sat < 0.5 and val > 0.75 else ("brown" if val < 0.45 else "red")
    if hue < 45:
        return "brown" if val < 0.65 else "orange"
    if hue < 70:
        return "brown" if val < 0.5 else "yellow"
    if hue < 165:
        return "green"
    if hue < 260:
        return "blue"
    if hue < 300:
        return "purple"
    return "pink"


def main_colour(shares: np.ndarray) -> str | None:
    """The dominant colour, only when it clearly dominates (>= 35 % and 10 points ahead of the next)."""
    order = np.argsort(-shares)
    if shares[order[0]] >= 0.35 and shares[order[0]] - shares[order[1]] >= 0.10:
        return COLOURS[order[0]]
    return None


# ---- cached features -----------------------------------------------------------------------
def load_features(pool: Path | None = None, work: Path | None = None, grid: int = 3) -> dict:
    """Pooled EfficientNet features (N, grid*grid + 1, 1280), colour shares (N, 11), photo list.

    From the 7x7 feature maps (:func:`prepare_feature_maps`, any ``grid``) where they are cached, else from v1's
    cache of the 3x3 grid (:func:`prepare_features`, ``grid`` 3 only)."""
    from safetensors.torch import load_file

    from ..models.pocket.model import pool_feature_map

    pool, work = pool or default_pool(), work or default_work_dir()
    maps, v1 = work / "pool_fmaps.safetensors", work / "pool_features.safetensors"
    photos = {str(p.path.relative_to(pool)): p for p in list_pool(pool)}
    if maps.is_file():
        t = load_file(maps)
        meta = json.loads((work / "pool_fmaps.json").read_text())
        fmaps = t["fmaps"]
        pooled = torch.cat([pool_feature_map(fmaps[i : i + 256].float(), grid).half() for i in range(0, len(fmaps), 256)])
        return {"pooled": pooled, "colours": t["colours"].numpy(), "photos": [photos[r] for r in meta["paths"]], "grid": grid}
    if not v1.is_file() or grid != 3:
        raise SystemExit(f"{maps} is missing: run `python scripts/pocket/prepare.py` first")
    t = load_file(v1)
    meta = json.loads((work / "pool_features.json").read_text())
    return {"pooled": t["pooled"], "colours": t["colours"].numpy(), "photos": [photos[r] for r in meta["paths"]], "grid": 3}


def class_similarity(feats: dict, train_only: bool) -> tuple[list[str], torch.Tensor]:
    """Class names and the cosine similarity of their centroids (mean L2-normalised global feature)."""
    use = [bool(p.name) and (p.split == "train" or not train_only) for p in feats["photos"]]
    names = sorted({p.name for p, u in zip(feats["photos"], use) if u})
    index = {n: i for i, n in enumerate(names)}
    glob = F.normalize(feats["pooled"][:, -1].float(), dim=-1)
    cent = torch.zeros(len(names), glob.shape[1])
    for i, p in enumerate(feats["photos"]):
        if use[i]:
            cent[index[p.name]] += glob[i]
    cent = F.normalize(cent, dim=-1)
    return names, cent @ cent.T


def article(name: str) -> str:
    if name in ("Garfield", "Snoopy"):
        return name
    vowel = name[0].lower() in "aeiou" and not name.lower().startswith(("uni", "eu", "one", "use"))
    return ("an " if vowel else "a ") + name


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def overlapping(a: str, b: str) -> bool:
    """Names that contain each other ("cougar" / "cougar face") are never used as each other's negatives."""
    a, b = a.lower(), b.lower()
    return a in b or b in a


def hard_negatives(names: list[str], sim: torch.Tensor, k: int, sources: dict[str, set]) -> dict[str, list[str]]:
    """For each class, the k most similar other classes (by feature centroid) from the same dataset,
    so that two labels for one thing ("airplane" in Caltech, "airliner" in ImageNet) never collide."""
    out = {}
    for i, n in enumerate(names):
        order = sim[i].argsort(descending=True).tolist()
        out[n] = [names[j] for j in order if j != i and not overlapping(n, names[j]) and sources[n] & sources[names[j]]][:k]
    return out


def class_sources(photos) -> dict[str, set]:
    out = {}
    for p in photos:
        if p.name:
            out.setdefault(p.name, set()).add(p.source)
    return out


def prepare_features(pool: Path | None = None, work: Path | None = None, batch_size: int = 32) -> Path:
    """Run the frozen EfficientNet-Lite0 once over the pool and cache what training needs in ``work``:
    ``pool_features.safetensors`` with ``pooled`` (N, 10, 1280) = the 3x3 grid + global average of the
    (1280, 7, 7) feature map and ``colours`` (N, 11) = named-colour shares, and ``pool_features.json``."""
    from safetensors.torch import save_file

    from ..models.pocket.model import PocketConfig, pool_feature_map

    pool, work = pool or default_pool(), work or default_work_dir()
    torch.manual_seed(0)
    photos = list_pool(pool)
    grid = PocketConfig().grid
    print(f"{len(photos)} pool photos; splits:", {s: sum(p.split == s for p in photos) for s in ("train", "heldout_seen", "heldout_unseen")})
    t0 = time.time()
    pooled, colours = _encode_pool(photos, batch_size, lambda fmap: pool_feature_map(fmap, grid))
    work.mkdir(parents=True, exist_ok=True)
    save_file({"pooled": pooled, "colours": colours},
              work / "pool_features.safetensors")
    (work / "pool_features.json").write_text(json.dumps({"grid": grid, "paths": [str(p.path.relative_to(pool)) for p in photos]}))
    print(f"wrote {work / 'pool_features.safetensors'} in {time.time() - t0:.0f} s")
    return work / "pool_features.safetensors"


def prepare_feature_maps(pool: Path | None = None, work: Path | None = None, batch_size: int = 32) -> Path:
    """Run the frozen EfficientNet-Lite0 once over the pool and cache its whole (1280, 7, 7) feature map per photo
    (fp16, ``pool_fmaps.safetensors``, ~630 MB) and the colour shares, so that any visual-token grid can be
    trained and compared without running the vision tower again (:func:`load_features` pools them)."""
    from safetensors.torch import save_file

    pool, work = pool or default_pool(), work or default_work_dir()
    photos = list_pool(pool)
    print(f"{len(photos)} pool photos; splits:", {s: sum(p.split == s for p in photos) for s in ("train", "heldout_seen", "heldout_unseen")})
    t0 = time.time()
    maps, colours = _encode_pool(photos, batch_size, lambda fmap: fmap.half())
    work.mkdir(parents=True, exist_ok=True)
    save_file({"fmaps": maps, "colours": colours},
              work / "pool_fmaps.safetensors")
    (work / "pool_fmaps.json").write_text(json.dumps({"paths": [str(p.path.relative_to(pool)) for p in photos]}))
    print(f"wrote {work / 'pool_fmaps.safetensors'} in {time.time() - t0:.0f} s")
    return work / "pool_fmaps.safetensors"


def _encode_pool(photos: list[Photo], batch_size: int, keep) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen vision tower over ``photos`` in batches: ``(keep(feature maps) of all photos, colour shares (N, 11))``,
    with the count and seconds on stderr."""
    from ..images import load_image
    from ..vision.efficientnet import EfficientNetLite, preprocess

    vision = EfficientNetLite()
    kept, colours = [], []
    t0 = time.time()
    for i in range(0, len(photos), batch_size):
        imgs = [load_image(p.path) for p in photos[i : i + batch_size]]
        with torch.no_grad():
            kept.append(keep(vision.feature_map(preprocess(imgs))))
        colours += [colour_shares(img) for img in imgs]
        print(f"\r{i + len(imgs)}/{len(photos)} photos, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return torch.cat(kept).contiguous(), torch.from_numpy(np.stack(colours)).float()
