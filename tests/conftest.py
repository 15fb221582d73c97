"""Shared fixtures: tiny randomly initialised checkpoints of each HF family, built once per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from yollava import YoLLaVA
from yollava.models import load_model
from yollava.models.tiny import build_tiny_llava, build_tiny_qwen2_vl

BUILDERS = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    dirs = {family: build(root / family, init_range=0.5) for family, build in BUILDERS.items()}
    dirs["llava_tied"] = build_tiny_llava(root / "llava_tied", tie=True, init_range=0.5)
    dirs["llava_other"] = build_tiny_llava(root / "llava_other", seed=1, init_range=0.5)
    return dirs


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by thread synchronisation; on a shared 2-core machine one thread is ~4x faster.
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def private_dirs(tmp_path, monkeypatch):
    """Synthesised answers, concepts and the like go to a temporary cache and home, not the user's."""
    monkeypatch.setenv("YOLLAVA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("YOLLAVA_HOME", str(tmp_path / "home"))


@pytest.fixture(params=["llava", "qwen2_vl"])
def family(request) -> str:
    return request.param


@pytest.fixture
def engine(tiny_model_dirs, family, tmp_path) -> YoLLaVA:
    return YoLLaVA(load_model(str(tiny_model_dirs[family])), concepts_dir=tmp_path / "concepts")


@pytest.fixture
def llava_engine(tiny_model_dirs, tmp_path) -> YoLLaVA:
    return YoLLaVA(load_model(str(tiny_model_dirs["llava"])), concepts_dir=tmp_path / "concepts")


def make_photos(folder: Path, n: int, color_fn, seed: int = 0, size: int = 40) -> list[Path]:
    """Small synthetic JPEG photos whose colour comes from ``color_fn(rng)``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        img = Image.new("RGB", (size, size), color_fn(rng))
        img.save(p, quality=95)
        paths.append(p)
    return paths


def reddish(rng):
    return (200 + rng.randint(-30, 30), rng.randint(0, 40), rng.randint(0, 40))


def other_colour(rng):
    """A second, clearly separate cluster (blues): a random tiny model can tell these apart."""
    return (rng.randint(0, 50), rng.randint(0, 80), 190 + rng.randint(-40, 40))


class ColourEmbedder:
    """Cheap stand-in for EfficientNet: the centred mean colour of the photo and of its quadrants."""

    fingerprint = "test-colour-embedder-v1"

    def embed(self, images):
        import numpy as np

        out = []
        for img in images:
            a = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32) / 255.0 - 0.5
            parts = [a.mean((0, 1))] + [a[i:i + 8, j:j + 8].mean((0, 1)) for i in (0, 8) for j in (0, 8)]
            v = np.concatenate(parts)
            out.append(v / (np.linalg.norm(v) + 1e-8))
        return np.stack(out)
