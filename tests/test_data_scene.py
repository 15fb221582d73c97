"""Scene negatives: crops of the user's own photos that leave the subject out (yollava.data.scene), and the builder
samples made of them. A magenta square (the subject) pasted at a different place on each differently coloured photo;
the test embedder is a coarse colour histogram (where in the photo a colour is does not matter, as for a CNN's pooled
features)."""

import numpy as np
import pytest
from PIL import Image

from yollava.data.augment import SCENE_VIEW_BASE, augmented_view
from yollava.data.builder import build_training_set
from yollava.data.pool import ImagePool
from yollava.data.scene import SCENE_CROPS, choose_scene_crops, crop_box, subject_scores
from yollava.images import load_image

from .test_data_builder import make_photo


class ColourEmbedder:
    """L2-normalised 4 x 4 x 4 colour histogram."""

    fingerprint = "test-histogram-v1"

    def embed(self, images):
        out = []
        for img in images:
            a = (np.asarray(img.convert("RGB"), dtype=np.int64) // 64).reshape(-1, 3)
            h = np.bincount(a[:, 0] * 16 + a[:, 1] * 4 + a[:, 2], minlength=64).astype(np.float32)
            out.append(h / np.linalg.norm(h))
        return np.stack(out)

BACKGROUNDS = [(40, 160, 40), (30, 60, 200), (200, 200, 40), (90, 90, 90)]
#: where the subject sits in each photo (left, top) of 64 x 64: a different corner each time
PLACES = [(2, 2), (40, 2), (2, 40), (40, 40)]
SIDE = 22


def subject_photo(path, background, place, seed):
    rng = np.random.default_rng(seed)
    a = np.array(background, np.float32) + rng.normal(0, 10, (64, 64, 3))
    x, y = place
    a[y : y + SIDE, x : x + SIDE] = (230, 20, 230)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=95)
    return path


def overlaps(box, place):
    l, t, r, b = box
    x, y = place
    return l < x + SIDE and x < r and t < y + SIDE and y < b


@pytest.fixture
def photos(tmp_path):
    return [subject_photo(tmp_path / "bo" / f"{i}.jpg", bg, place, i) for i, (bg, place) in enumerate(zip(BACKGROUNDS, PLACES))]


def test_the_scene_crop_of_each_photo_leaves_the_subject_out(photos):
    crops = choose_scene_crops(photos, ColourEmbedder(), per_photo=1)
    assert {c.photo for c in crops} == set(photos)
    for c in crops:
        place = PLACES[photos.index(c.photo)]
        assert not overlaps(crop_box((64, 64), c.crop), place), f"{c.photo.name}: crop {SCENE_CROPS[c.crop]} holds the subject"
        assert c.score <= c.best - 0.05
    # and the crops the photos share the subject through score highest
    scores = subject_scores(photos, ColourEmbedder())
    for i, place in enumerate(PLACES):
        best = int(np.argmax(scores[i]))
        assert overlaps(crop_box((64, 64), best), place)


def test_every_crop_is_embedded_whole_as_a_padded_square(photos):
    seen = []

    class Recording(ColourEmbedder):
        def embed(self, images):
            seen.extend(im.size for im in images)
            return super().embed(images)

    subject_scores(photos, Recording())
    assert len(seen) == len(photos) * (len(SCENE_CROPS) + 1)
    assert all(w == h for w, h in seen)  # a centre crop of a square loses nothing
    assert sorted(set(seen)) == [(32, 32), (64, 64)]  # quarters and halves (32 x 64 padded), photos


def test_a_subject_that_fills_every_photo_gives_no_scene_crop(tmp_path):
    filled = [make_photo(tmp_path / f"{i}.jpg", (230, 20, 230), seed=i, noise=8) for i in range(3)]
    assert choose_scene_crops(filled, ColourEmbedder(), per_photo=1) == []


def test_one_photo_or_none_asked_gives_no_crop_and_bad_values_fail(photos):
    assert choose_scene_crops(photos[:1], ColourEmbedder(), per_photo=1) == []
    assert choose_scene_crops(photos, ColourEmbedder(), per_photo=0) == []
    with pytest.raises(ValueError, match="at least 2 photos"):
        subject_scores(photos[:1], ColourEmbedder())
    with pytest.raises(ValueError, match="per_photo"):
        choose_scene_crops(photos, ColourEmbedder(), per_photo=-1)
    with pytest.raises(ValueError, match="scene crop index"):
        crop_box((64, 64), len(SCENE_CROPS))


def test_builder_trains_the_scene_crops_as_no(photos, tmp_path):
    pool_dir = tmp_path / "pool"
    rng = np.random.default_rng(0)
    for i in range(12):
        make_photo(pool_dir / f"p{i}.jpg", rng.integers(0, 256, 3), seed=i)
    pool = ImagePool.build_or_update([pool_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    common = dict(n_easy_negatives=4, n_hard_negatives=0, conversations=False, short_answers=True, sentence_answers=False)
    ts = build_training_set("bo", photos, pool, scene_negatives=1, **common)
    scene = [s for s in ts.samples if s.kind == "scene_negative"]
    assert len(scene) == 4 and ts.counts["scene_negative"] == 4
    assert all(s.answer == "No" and s.view >= SCENE_VIEW_BASE and s.image in photos and not s.calibration for s in scene)
    assert len(ts.config["scene_crops"]) == 4
    for s in scene:  # the pixels the trainer reads (augmented_view) are the chosen crop, without the subject
        crop = augmented_view(load_image(s.image), s.view, seed=0)
        box = crop_box((64, 64), s.view - SCENE_VIEW_BASE)
        assert crop.size == (box[2] - box[0], box[3] - box[1])
        assert not overlaps(box, PLACES[photos.index(s.image)])
    assert build_training_set("bo", photos, pool, **common).counts["scene_negative"] == 0
    with pytest.raises(ValueError, match="scene negatives need"):
        build_training_set("bo", photos, pool, scene_negatives=1, **(common | {"short_answers": False, "sentence_answers": True}))
