"""Shared by the pocket training and evaluation scripts: the pool, its fixed split, pixel facts,
cached vision features, sample building and the training/scoring forward pass.

Data: ``<data>/pool`` only (imagenet/, caltech101/, cc12m/); never the yollava/ or myvlm/ folders.
Split (fixed, by hashing names): ~10 % of class names are "unseen" (no photo and no mention in
training); of the seen classes' Caltech photos ~12 % are held out; ~10 % of cc12m is held out.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from yollava.paths import cache_home, default_data_root  # noqa: E402

POOL = default_data_root() / "pool"
WORK = cache_home() / "pocket-train"  # cached features (regenerable, not committed)
RUNS = ROOT / "runs" / "pocket"  # training outputs before they are copied into the package
WEIGHTS_DIR = ROOT / "src" / "yollava" / "models" / "pocket" / "weights"

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


def list_pool(pool: Path = POOL) -> list[Photo]:
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
def load_features() -> dict:
    """Pooled EfficientNet features (N, 10, 1280), colour shares (N, 11), photo list; see prepare.py."""
    from safetensors.torch import load_file

    path = WORK / "pool_features.safetensors"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python scripts/pocket/prepare.py` first")
    t = load_file(path)
    meta = json.loads((WORK / "pool_features.json").read_text())
    photos = {str(p.path.relative_to(POOL)): p for p in list_pool()}
    return {"pooled": t["pooled"], "colours": t["colours"].numpy(), "photos": [photos[r] for r in meta["paths"]]}


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


# ---- tokenising and the training forward pass ------------------------------------------------
@dataclass
class Sample:
    index: int  # row in the feature table (the photo)
    question: str
    answer: str
    kind: str


class Batcher:
    """Samples -> token ids laid out as the engine does (render, split at the marker, splice ids)."""

    def __init__(self, adapter):
        from yollava.models import Message

        self.adapter, self.tok = adapter, adapter.tokenizer
        system = adapter.render([Message("user", "x")], add_generation_prompt=False)
        self.prefix_text = system[: system.index("<|im_start|>user")]
        self.prefix_ids = self.tok(self.prefix_text, add_special_tokens=False)["input_ids"]
        self.pad_id = self.tok.pad_token_id or 0
        self.Message = Message

    def encode(self, s: Sample) -> tuple[list[int], int]:
        """Ids after the shared system prefix, and where the answer starts in them."""
        rendered = self.adapter.render([self.Message("user", s.question, has_image=True)])
        assert rendered.startswith(self.prefix_text)
        before, after = rendered[len(self.prefix_text) :].split(self.adapter.image_marker)
        ids = self.tok(before, add_special_tokens=False)["input_ids"] + self.adapter.image_token_ids
        ids += self.tok(after, add_special_tokens=False)["input_ids"]
        answer = self.tok(s.answer + self.adapter.end_of_turn, add_special_tokens=False)["input_ids"]
        return ids + answer, len(ids)

    def collate(self, samples: list[Sample]):
        enc = [self.encode(s) for s in samples]
        width = max(len(ids) for ids, _ in enc)
        ids = torch.full((len(enc), width), self.pad_id)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        target = torch.zeros((len(enc), width), dtype=torch.bool)  # tokens the model must predict
        for i, (row, start) in enumerate(enc):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            target[i, start : len(row)] = True
        return ids, mask, target


def forward_hidden(adapter, batcher: Batcher, ids, mask, visual):
    """Hidden states of the ids after the system prefix (whose keys/values are computed once, no grad).

    ``visual`` (B, n, hidden) fills the image-pad slots. Same numbers as a full forward pass."""
    llm = adapter.model.llm.model
    with torch.no_grad():
        prefix = torch.tensor([batcher.prefix_ids])
        cache = llm(inputs_embeds=adapter.embed_tokens(prefix), use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
    emb = adapter.embed_tokens(ids)
    slots = (ids == adapter.image_token_id).unsqueeze(-1)
    emb = emb.masked_scatter(slots, visual.to(emb.dtype))
    full_mask = torch.cat([torch.ones(ids.shape[0], len(batcher.prefix_ids), dtype=mask.dtype), mask], dim=1)
    return llm(inputs_embeds=emb, attention_mask=full_mask, past_key_values=cache, use_cache=True).last_hidden_state


def answer_loss(adapter, hidden, ids, target) -> torch.Tensor:
    """Cross-entropy on answer tokens only; lm_head runs only where needed."""
    predicts = target[:, 1:]
    logits = adapter.lm_head(hidden[:, :-1][predicts])
    return F.cross_entropy(logits.float(), ids[:, 1:][predicts])


def batches(samples: list[Sample], batch_size: int, rng: random.Random) -> list[list[Sample]]:
    """Shuffle, then group samples of similar answer/question length to waste little padding."""
    samples = samples[:]
    rng.shuffle(samples)
    chunks = [samples[i : i + batch_size * 16] for i in range(0, len(samples), batch_size * 16)]
    out = []
    for chunk in chunks:
        chunk.sort(key=lambda s: len(s.question) + len(s.answer))
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


class Log:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a")
        self.t0 = time.time()

    def __call__(self, msg: str):
        line = f"[{time.time() - self.t0:7.0f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(adapter, batcher: Batcher, pooled: torch.Tensor, samples: list[Sample], params, *, lr: float,
          epochs: float, batch_size: int, seed: int, log: Log, on_checkpoint=None, every: int = 50):
    """AdamW with linear warm-up and cosine decay over ``epochs`` passes of ``samples``."""
    import math

    rng = random.Random(seed)
    plan = []
    while len(plan) < epochs * len(samples) / batch_size:
        plan += batches(samples, batch_size, rng)
    plan = plan[: max(1, round(epochs * len(samples) / batch_size))]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # params: tensors or groups with their own lr
    params = [p for g in opt.param_groups for p in g["params"]]
    warm = min(30, len(plan) // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / len(plan)))))
    log(f"{len(samples)} samples, {len(plan)} steps of {batch_size}, lr {lr}")
    t0, ema, history = time.time(), None, []
    for step, batch in enumerate(plan, 1):
        ids, mask, target = batcher.collate(batch)
        visual = adapter.model.projector(pooled[[s.index for s in batch]].float())
        loss = answer_loss(adapter, forward_hidden(adapter, batcher, ids, mask, visual.flatten(0, 1)), ids, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        history.append(loss.item())
        if step % 10 == 0 or step == len(plan):
            el = time.time() - t0
            log(f"step {step}/{len(plan)} loss {loss.item():.3f} (avg {ema:.3f}) {el / (step * batch_size):.2f} s/sample, "
                f"eta {el / step * (len(plan) - step) / 60:.1f} min")
        if on_checkpoint and (step % every == 0 or step == len(plan)):
            on_checkpoint(step, history)
    return history


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
