"""The image pool index: embedding, incremental re-indexing, unreadable files, search, sampling."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from yollava.data.pool import ImagePool


class ColourEmbedder:
    """Cheap stand-in for EfficientNet: centred mean colour of the whole photo and of its quadrants."""

    fingerprint = "test-colour-v1"

    def __init__(self):
        self.calls = 0  # photos embedded

    def embed(self, images):
        self.calls += len(images)
        out = []
        for img in images:
            a = np.asarray(img.resize((16, 16)), dtype=np.float32) / 255.0 - 0.5
            parts = [a.mean((0, 1))] + [a[i:i + 8, j:j + 8].mean((0, 1)) for i in (0, 8) for j in (0, 8)]
            v = np.concatenate(parts)
            out.append(v / (np.linalg.norm(v) + 1e-8))
        return np.stack(out)


def make_photo(path, colour, seed=0):
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour, np.float32) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=90)
    return path


@pytest.fixture
def photo_dir(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "pool"
    for i in range(12):
        make_photo(d / ("sub" if i % 3 == 0 else "") / f"p{i:02d}.jpg", rng.integers(0, 256, 3), seed=i)
    return d


def test_build_indexes_every_photo_recursively(photo_dir, tmp_path):
    emb = ColourEmbedder()
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", emb, progress=False)
    assert len(pool) == 12 and emb.calls == 12
    assert len(pool.report.added) == 12 and not pool.report.skipped
    assert np.allclose(np.linalg.norm(pool.vectors(), axis=1), 1, atol=1e-5)
    meta = json.loads((tmp_path / "idx" / "files.json").read_text())
    assert meta["embedder"] == "test-colour-v1" and len(meta["files"]) == 12
    assert {"path", "size", "mtime", "sha256"} <= set(meta["files"][0])
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.endswith(".tmp")]
    # each photo is its own nearest neighbour
    hits = pool.search(pool.vectors()[:3], k=2)
    assert [h[0][0] for h in hits] == pool.paths[:3]
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5) and hits[0][0][1] >= hits[0][1][1]


def test_reindex_adds_only_new_files_and_drops_vanished(photo_dir, tmp_path):
    ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    make_photo(photo_dir / "new1.jpg", (10, 200, 10), seed=50)
    make_photo(photo_dir / "deep" / "er" / "new2.png", (200, 10, 10), seed=51)
    (photo_dir / "p01.jpg").unlink()
    emb = ColourEmbedder()
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", emb, progress=False)
    assert emb.calls == 2 and len(pool) == 13
    assert sorted(p.name for p in pool.report.added) == ["new1.jpg", "new2.png"]
    assert [p.name for p in pool.report.removed] == ["p01.jpg"]
    # nothing new: nothing embedded, and the reopened index agrees
    emb2 = ColourEmbedder()
    again = ImagePool.build_or_update([photo_dir], tmp_path / "idx", emb2, progress=False)
    assert emb2.calls == 0 and again.paths == pool.paths
    assert np.allclose(ImagePool.load(tmp_path / "idx").vectors(), pool.vectors())


def test_changed_file_is_re_embedded(photo_dir, tmp_path):
    ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    target = photo_dir / "p02.jpg"
    make_photo(target, (0, 0, 255), seed=99)
    os.utime(target, (1e9, 1e9))
    emb = ColourEmbedder()
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", emb, progress=False)
    assert emb.calls == 1 and len(pool) == 12
    row = pool.paths.index(target.resolve())
    assert np.allclose(pool.vectors()[row], ColourEmbedder().embed([Image.open(target).convert("RGB")])[0], atol=1e-5)


def test_touched_but_unchanged_file_is_not_re_embedded(photo_dir, tmp_path):
    first = ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    for photo in photo_dir.rglob("*.jpg"):  # what a copy or a sync does: new mtimes, same bytes
        os.utime(photo, (2e9, 2e9))
    emb = ColourEmbedder()
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", emb, progress=False)
    assert emb.calls == 0 and pool.paths == first.paths and not pool.report.removed
    assert np.allclose(pool.vectors(), first.vectors())
    # the new mtimes were saved: the next run does not even hash the files again
    assert {e["mtime"] for e in json.loads((tmp_path / "idx" / "files.json").read_text())["files"]} == {2e9}


def test_unreadable_files_are_skipped_with_a_warning(photo_dir, tmp_path, caplog):
    (photo_dir / "text.jpg").write_text("this is not a photo")
    good = (photo_dir / "p01.jpg").read_bytes()
    (photo_dir / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photo_dir / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="yollava.data.pool"):
        pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    assert len(pool) == 12
    assert sorted(p.name for p, _ in pool.report.skipped) == ["empty.png", "text.jpg", "truncated.jpg"]
    assert "text.jpg" in caplog.text and "truncated.jpg" in caplog.text


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImagePool.build_or_update([tmp_path / "nope"], tmp_path / "idx", ColourEmbedder(), progress=False)
    with pytest.raises(FileNotFoundError, match="yollava pool index"):
        ImagePool.load(tmp_path / "idx")


def test_other_embedder_rebuilds(photo_dir, tmp_path):
    ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    other = ColourEmbedder()
    other.fingerprint = "another-embedder"
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", other, progress=False)
    assert other.calls == 12 and pool.embedder_id == "another-embedder"


def test_search_and_sample_respect_exclusions(photo_dir, tmp_path):
    pool = ImagePool.build_or_update([photo_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    first = pool.paths[0]
    hits = pool.search(pool.vectors()[0], k=3, exclude={pool.entries[0]["sha256"], str(pool.paths[1])})[0]
    assert len(hits) == 3 and first not in [p for p, _ in hits] and pool.paths[1] not in [p for p, _ in hits]
    a = pool.sample_random(5, seed=3, exclude=[first])
    assert a == pool.sample_random(5, seed=3, exclude=[first]) and first not in a and len(set(a)) == 5
    assert a != pool.sample_random(5, seed=4, exclude=[first])
    assert len(pool.sample_random(100, seed=0)) == 12


def test_real_efficientnet_pool(tmp_path):
    from yollava.vision.efficientnet import EfficientNetLite

    d = tmp_path / "pool"
    for i, c in enumerate([(250, 20, 20), (240, 30, 30), (20, 20, 250), (20, 240, 20), (128, 128, 128)] * 2):
        make_photo(d / f"{i}.jpg", c, seed=i)
    pool = ImagePool.build_or_update([d], tmp_path / "idx", EfficientNetLite(), progress=False)
    assert len(pool) == 10 and pool.dim == 1280
    assert np.allclose(np.linalg.norm(pool.vectors(), axis=1), 1, atol=1e-4)
    hits = pool.search(pool.vectors()[0], k=10)[0]
    assert hits[0][0].name == "0.jpg" and hits[0][1] == pytest.approx(1, abs=1e-4)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_channels_last_encoder_gives_the_features_of_the_plain_one():
    """The shipped encoder runs its convolutions channels-last for speed; the features may move only by float
    rounding (pool indexes, concept heads and pocket's visual tokens built before the change stay valid)."""
    import torch

    from yollava.vision.efficientnet import EfficientNetLite

    net = EfficientNetLite()
    assert net.net._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    fast = net.feature_map(x)
    assert fast.is_contiguous() and fast.shape == (2, 1280, 7, 7)
    net.net.to(memory_format=torch.contiguous_format)
    assert torch.allclose(fast, net.feature_map(x), rtol=0, atol=1e-4)
