"""Photos without the subject (``personalize --negatives``; the eval's library negatives): the builder trains them as
"No" with augmented views, the concept head learns from them, bad lists fail clearly, and the evaluation keeps runs
with and without them apart. The world of ``test_data_scene``: a magenta square (the subject) on coloured scenes;
the photos without it show the same scenes with a cyan square (another thing in the same rooms)."""

import json

import numpy as np
import pytest

from yollava.data.builder import GIVEN_NEGATIVE_VIEWS, build_training_set
from yollava.data.pool import ImagePool
from yollava.errors import InvalidImageError, PhotoListError
from yollava.eval.datasets import RecognitionDataset, Subject
from yollava.personalize import check_negative_photos
from yollava.who import fit_signature, head_scores

from .test_data_builder import make_photo
from .test_data_scene import BACKGROUNDS, PLACES, SIDE, ColourEmbedder, subject_photo


def other_thing_photo(path, background, place, seed):
    """The same kind of scene with a cyan square where the subject would be."""
    from PIL import Image

    subject_photo(path, background, place, seed)
    a = np.asarray(Image.open(path)).copy()
    x, y = place
    a[y : y + SIDE, x : x + SIDE] = (20, 230, 230)
    Image.fromarray(a).save(path, quality=95)
    return path


@pytest.fixture
def world(tmp_path):
    photos = [subject_photo(tmp_path / "bo" / f"{i}.jpg", bg, place, i) for i, (bg, place) in enumerate(zip(BACKGROUNDS, PLACES))]
    others = [other_thing_photo(tmp_path / "rooms" / f"{i}.jpg", bg, place, 10 + i) for i, (bg, place) in enumerate(zip(BACKGROUNDS, PLACES))]
    rng = np.random.default_rng(0)
    for i in range(16):
        make_photo(tmp_path / "pool" / f"p{i}.jpg", rng.integers(0, 256, 3), seed=i)
    pool = ImagePool.build_or_update([tmp_path / "pool"], tmp_path / "idx", ColourEmbedder(), progress=False)
    return photos, others, pool


COMMON = dict(n_easy_negatives=4, n_hard_negatives=0, conversations=False, short_answers=True, sentence_answers=True,
              sentence_negatives=0)


def test_builder_trains_given_photos_as_no_with_views(world):
    photos, others, pool = world
    ts = build_training_set("bo", photos, pool, negative_photos=others, **COMMON)
    given = [s for s in ts.samples if s.kind == "given_negative"]
    assert len(given) == len(others) * (1 + GIVEN_NEGATIVE_VIEWS) == ts.counts["given_negative"]
    assert all(s.answer == "No" and s.image in others and not s.calibration for s in given)
    assert sorted({s.view for s in given}) == list(range(1 + GIVEN_NEGATIVE_VIEWS))
    assert ts.config["given_negatives"] == len(others) and len(ts.config["given_negative_sha256"]) == len(others)
    # without them: nothing of the kind, and the rest of the set is the same photos and answers (the questions are
    # drawn from one seeded stream, so they shift)
    plain = build_training_set("bo", photos, pool, **COMMON)
    assert plain.counts["given_negative"] == 0 and plain.config["given_negatives"] == 0
    key = lambda s: (s.image, s.kind, s.answer, s.view)  # noqa: E731
    assert [key(s) for s in ts.samples if s.kind != "given_negative"] == [key(s) for s in plain.samples]


def test_given_photos_count_when_positives_are_balanced(world):
    photos, others, pool = world
    with_given = build_training_set("bo", photos, pool, negative_photos=others, **(COMMON | {"positive_views": None}))
    without = build_training_set("bo", photos, pool, **(COMMON | {"positive_views": None}))
    yes = lambda ts: sum(s.answer == "Yes" and not s.calibration for s in ts.samples)  # noqa: E731
    no = lambda ts: sum(s.answer == "No" and not s.calibration for s in ts.samples)  # noqa: E731
    assert yes(with_given) > yes(without)
    assert abs(yes(with_given) - no(with_given)) < len(photos)  # balanced within one round of views


def test_a_copy_of_a_subject_photo_is_left_out_and_an_unreadable_one_fails(world, tmp_path):
    photos, others, pool = world
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photos[0].read_bytes())
    ts = build_training_set("bo", photos, pool, negative_photos=[copy, *others], **COMMON)
    assert ts.config["given_negatives"] == len(others)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(InvalidImageError, match="broken.jpg"):
        build_training_set("bo", photos, pool, negative_photos=[broken], **COMMON)


def test_personalize_rejects_a_photo_given_as_both_and_an_empty_folder(world, tmp_path):
    photos, others, _ = world
    assert check_negative_photos([others[0].parent], photos) == sorted(p.resolve() for p in others)
    with pytest.raises(PhotoListError, match="both as a photo of the subject and as a photo without it"):
        check_negative_photos([photos[1]], [p.resolve() for p in photos])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhotoListError, match="no photos found"):
        check_negative_photos([tmp_path / "empty"], photos)
    assert check_negative_photos([], photos) == []


def test_the_head_learns_the_rooms_from_photos_without_the_subject(world, tmp_path):
    """The fault this catches: a head that learned the rooms, not the subject, says yes to another thing there."""
    photos, others, pool = world
    embedder = pool.embedder
    probes = [other_thing_photo(tmp_path / "probe" / f"{i}.jpg", bg, place, 20 + i)
              for i, (bg, place) in enumerate(zip(BACKGROUNDS, reversed(PLACES)))]
    plain = fit_signature(photos, embedder, pool, seed=0, views=2)
    taught = fit_signature(photos, embedder, pool, seed=0, views=2, negatives=others)
    assert taught.head.info["n_negative"] == plain.head.info["n_negative"] + len(others) * 3
    assert taught.info["given_negatives"] == len(others)
    def margin(sig):  # the subject's lowest score above the other thing's highest, in the same rooms
        return min(head_scores(sig, embedder, photos)) - max(head_scores(sig, embedder, probes))

    assert margin(plain) < 0.01  # the fault: the rooms alone score nearly as high as the subject
    assert margin(taught) > margin(plain) + 0.02
    assert np.mean(head_scores(taught, embedder, probes)) < np.mean(head_scores(plain, embedder, probes)) - 0.04


def test_library_negatives_are_the_other_subjects_training_photos(tmp_path):
    def subject(name):
        return Subject(name, [tmp_path / f"{name}-train-{i}.jpg" for i in range(2)], [tmp_path / f"{name}-test.jpg"])

    ds = RecognitionDataset("d", [subject("a"), subject("b"), subject("c")])
    lib = ds.with_library_negatives()
    a = lib.subject("a")
    assert a.train_negatives == ds.subject("b").train + ds.subject("c").train
    tests = {p for s in ds.subjects for p in s.test}
    assert not tests & {p for s in lib.subjects for p in s.train_negatives}  # no test photo is ever trained on
    assert lib.test_set(a) == ds.test_set(ds.subject("a"))  # the test set is unchanged
    assert "train_negatives" not in ds.split()["a"] and lib.split()["a"]["train_negatives"] == 4  # runs differ in config.json
    assert ds.subject("a").train_negatives == []  # the original is untouched


def test_a_concept_trained_without_the_library_is_not_reused_by_a_library_run(tmp_path):
    from dataclasses import asdict

    from yollava.eval.methods import EvalContext, YollavaMethod
    from yollava.images import file_sha256
    from yollava.recipes import get_recipe

    photos = [make_photo(tmp_path / "a" / f"{i}.jpg", (200, 30, 30), seed=i) for i in range(2)]
    others = [make_photo(tmp_path / "b" / f"{i}.jpg", (30, 30, 200), seed=i) for i in range(2)]
    recipe = get_recipe("fast")
    old = tmp_path / "old.run" / "concepts" / "yollava"
    old.mkdir(parents=True)
    meta = {"recipe": recipe.to_dict(), "eval_data_config": asdict(recipe.data),
            "source_photos": [{"file": p.name, "sha256": file_sha256(p)} for p in photos], "data": {}}
    (old / "a.json").write_text(json.dumps(meta))
    (old / "a.safetensors").write_bytes(b"x")
    method = YollavaMethod()

    def reused(train_negatives, run):
        ctx = EvalContext(engine=None, run_dir=tmp_path / run, train=recipe.train, data=recipe.data, reuse_from=[tmp_path / "old.run"])
        subject = Subject("a", photos, [], train_negatives=train_negatives)
        method._reuse(ctx, subject, recipe.data)
        return (tmp_path / run / "concepts" / "yollava" / "a.json").exists()

    assert not reused(others, "library.run")
    assert reused([], "plain.run")


def test_eval_refuses_library_negatives_on_a_one_subject_dataset(tmp_path):
    from typer.testing import CliRunner

    from yollava.cli import app

    r = CliRunner().invoke(app, ["eval", "recognition", "--dataset", "bo", "--library-negatives", "--out", str(tmp_path / "r.json")])
    assert r.exit_code == 1 and "--library-negatives needs a dataset of several subjects" in " ".join(r.output.split())
    assert not (tmp_path / "r.json").exists()
