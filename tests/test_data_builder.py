"""The training-set builder (positives, easy/hard negatives, text-only conversations), its JSON,
contact sheet and CLI, on a tiny synthetic pool with a cheap colour embedder."""

import json
import shutil

import numpy as np
import pytest

from yollava.prompts import CAPTION_QUERY
from PIL import Image
from typer.testing import CliRunner

from yollava.cli import data as commands
from yollava.data.builder import build_training_set
from yollava.data.contact_sheet import contact_sheet, summary
from yollava.data.pool import ImagePool
from yollava.data.templates import negative_templates, positive_templates
from yollava.data.training_set import TrainingSet
from yollava.errors import NotEnoughPhotosError
from yollava.images import file_sha256


class ColourEmbedder:
    """Cheap stand-in for EfficientNet: centred mean colour of the whole photo and of its quadrants."""

    fingerprint = "test-colour-v1"

    def embed(self, images):
        out = []
        for img in images:
            a = np.asarray(img.resize((16, 16)), dtype=np.float32) / 255.0 - 0.5
            parts = [a.mean((0, 1))] + [a[i:i + 8, j:j + 8].mean((0, 1)) for i in (0, 8) for j in (0, 8)]
            v = np.concatenate(parts)
            out.append(v / (np.linalg.norm(v) + 1e-8))
        return np.stack(out)


def make_photo(path, colour, seed=0, noise=25, patch=None):
    rng = np.random.default_rng(seed)
    a = np.array(colour, np.float32) + rng.normal(0, noise, (32, 32, 3))
    if patch is not None:  # a different-coloured top-left corner
        a[:14, :14] = patch
    a = np.clip(a, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=90)
    return path


class FakeModel:
    """``answer_fn`` that counts the questions it is asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, question, image):
        self.calls.append((question, image))
        subject = "Riley" if "Riley" in question else "This subject"
        return f"{subject} looks orange in {image.name}."


@pytest.fixture
def world(tmp_path):
    """3 photos of an orange subject; a 41-photo pool with orange look-alikes (one of them twice), an
    exact copy and a near-copy of a subject photo, and an unreadable file."""
    photos = [make_photo(tmp_path / "bo" / f"{i}.jpg", (230, 120, 30), seed=100 + i) for i in range(3)]
    rng = np.random.default_rng(0)
    pool_dir = tmp_path / "pool"
    for i in range(30):
        make_photo(pool_dir / "random" / f"r{i:02d}.jpg", rng.integers(0, 256, 3) * (0.5, 1, 1), seed=i)
    for i in range(8):  # look-alikes: orange-ish but not the subject
        make_photo(pool_dir / "orange" / f"o{i}.jpg", (230, 120, 30), seed=200 + i, patch=(20 * i, 60, 120))
    shutil.copy(pool_dir / "orange" / "o7.jpg", pool_dir / "o7_again.jpg")  # same look-alike twice
    shutil.copy(photos[0], pool_dir / "copy_of_bo0.jpg")
    a = np.asarray(Image.open(photos[1]), dtype=np.int16)
    Image.fromarray(np.clip(a + 3, 0, 255).astype(np.uint8)).save(pool_dir / "near_bo1.jpg", quality=95)
    (pool_dir / "broken.jpg").write_text("not a jpeg")
    pool = ImagePool.build_or_update([pool_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    return photos, pool, tmp_path


def build(world, **kw):
    photos, pool, tmp = world
    kw.setdefault("answer_fn", FakeModel())
    kw.setdefault("cache_dir", tmp / "answers")
    return build_training_set("bo", photos, pool, **kw)


def test_counts(world):
    photos, pool, _ = world
    assert len(pool) == 41 and [p.name for p, _ in pool.report.skipped] == ["broken.jpg"]
    ts = build(world, n_easy_negatives=10, n_hard_negatives=7)  # m = ceil(7/3) = 3 per photo
    assert ts.name == "<bo>"
    assert ts.counts == {"positive": 3, "negative": 10, "hard_negative": 9, "scene_negative": 0, "given_negative": 0, "conversation": 30, "caption": 0, "other_caption": 0}
    assert len(ts.hard_negatives) == 9 and all(len(ts.hard_negatives_for(p)) == 3 for p in ts.positives)
    assert ts.config["hard_per_positive"] == 3
    assert summary(ts)["hard_negative"] == 9 and summary(ts)["photos"] == 3


def test_templates_are_used_with_the_identifier(world):
    ts = build(world, n_easy_negatives=10, n_hard_negatives=6)
    pos, neg = set(positive_templates("<bo>")), set(negative_templates("<bo>"))
    for s in ts.samples:
        if s.kind == "positive":
            assert (s.question, s.answer) in pos and s.image in ts.positives
        elif s.kind in ("negative", "hard_negative"):
            assert (s.question, s.answer) in neg and s.image is not None


def test_no_positive_among_negatives(world):
    photos, pool, _ = world
    ts = build(world, n_easy_negatives=100, n_hard_negatives=100)  # asks for more than the pool has
    negatives = [s.image for s in ts.samples if s.kind in ("negative", "hard_negative")]
    names = {p.name for p in negatives}
    assert "copy_of_bo0.jpg" not in names  # same bytes as a positive
    assert "near_bo1.jpg" not in names  # cosine > 0.95 to a positive
    pos_sha = {file_sha256(p) for p in photos}
    assert not pos_sha & {file_sha256(p) for p in negatives}
    # every other pool photo, once each (by content too: o7_again.jpg is o7.jpg)
    assert len(negatives) == len({file_sha256(p) for p in negatives}) == len(pool) - 3


def test_hard_negatives_are_the_nearest(world):
    photos, pool, _ = world
    ts = build(world, n_easy_negatives=0, n_hard_negatives=3, conversations=False)  # m = 1
    first = ts.hard_negatives_for(ts.positives[0])[0]
    vec, _, _ = pool.embed([photos[0]])
    banned = {str(pool.paths[i]) for i in range(len(pool)) if pool.paths[i].name in ("copy_of_bo0.jpg", "near_bo1.jpg")}
    best = pool.search(vec, 1, exclude=banned)[0][0]
    assert file_sha256(first.path) == file_sha256(best[0]) and first.score == pytest.approx(best[1])
    assert all(h.path.name.startswith("o7") or h.path.parent.name == "orange" for h in ts.hard_negatives)
    scores = [h.score for h in ts.hard_negatives]
    assert all(0.5 < s <= 0.95 for s in scores)


def test_photos_take_turns_for_shared_neighbours(world):
    photos, pool, _ = world
    ts = build(world, n_easy_negatives=0, n_hard_negatives=6, conversations=False)  # m = 2
    assert [h.anchor for h in ts.hard_negatives] == [p for _ in range(2) for p in ts.positives]
    for anchor in ts.positives:  # each photo's list is ordered by its own similarity
        scores = [h.score for h in ts.hard_negatives_for(anchor)]
        assert scores == sorted(scores, reverse=True)
    assert len({file_sha256(h.path) for h in ts.hard_negatives}) == 6


def test_deterministic_for_a_seed(world):
    a = build(world, n_easy_negatives=10, n_hard_negatives=6, seed=7)
    b = build(world, n_easy_negatives=10, n_hard_negatives=6, seed=7)
    c = build(world, n_easy_negatives=10, n_hard_negatives=6, seed=8)
    assert a.samples == b.samples and a.hard_negatives == b.hard_negatives
    assert a.easy_negatives != c.easy_negatives


def test_ablations(world):
    ts = build(world, n_easy_negatives=5, hard_negatives=False, conversations=False, answer_fn=None)
    assert ts.counts == {"positive": 3, "negative": 5, "hard_negative": 0, "scene_negative": 0, "given_negative": 0, "conversation": 0, "caption": 0, "other_caption": 0}
    photos, _, tmp = world
    only_pos = build_training_set("bo", photos, None, n_easy_negatives=0, hard_negatives=False, conversations=False)
    assert only_pos.counts["positive"] == 3 and len(only_pos.samples) == 3
    with pytest.raises(ValueError, match="answer_fn"):
        build_training_set("bo", photos, world[1], conversations=True)
    with pytest.raises(ValueError, match="pool"):
        build_training_set("bo", photos, None, conversations=False)


def test_conversations_are_text_only_and_name_the_identifier(world):
    model = FakeModel()
    ts = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=model)
    conv = [s for s in ts.samples if s.kind == "conversation"]
    assert len(conv) == 30 and len(model.calls) == 30
    assert all(s.image is None for s in conv)
    assert all("this subject" in q for q, _ in model.calls)  # the model is asked the paper's wording
    assert all("<bo>" in s.question and "this subject" not in s.question for s in conv)
    assert all(s.answer.startswith("<bo> looks orange") for s in conv)
    assert "What color is <bo>?" in {s.question for s in conv}

    person = FakeModel()
    ts = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=person, category="person")
    conv = [s for s in ts.samples if s.kind == "conversation"]
    assert all("Riley" in q for q, _ in person.calls)
    assert "What is <bo> hair color?" in {s.question for s in conv}
    assert all("Riley" not in s.question + s.answer for s in conv)


def test_caption_samples_answer_with_the_base_models_caption_naming_the_identifier(world):
    class Captioner(FakeModel):
        def __call__(self, question, image):
            self.calls.append((question, image))
            return "A photo of a dog lying on a bed. The main colours are" if question == CAPTION_QUERY else "It is orange."

    model = Captioner()
    ts = build(world, n_easy_negatives=0, hard_negatives=False, conversations=False, answer_fn=model, caption_photos=2)
    captions = [s for s in ts.samples if s.kind == "caption"]
    assert ts.counts["caption"] == 2 and ts.counts["conversation"] == 0 and len(model.calls) == 2
    assert [s.image for s in captions] == ts.positives[:2]  # about the photo, with the photo
    assert all(s.question == CAPTION_QUERY and s.answer == "<bo> is a dog lying on a bed." for s in captions)  # cut at the last full sentence
    assert not any(s.is_recognition for s in captions)
    assert ts.config["caption_photos"] == 2
    with pytest.raises(ValueError, match="captions need answer_fn"):
        build(world, n_easy_negatives=0, hard_negatives=False, conversations=False, answer_fn=None, caption_photos=1)


def test_answer_cache_avoids_re_asking(world):
    first, second, other = FakeModel(), FakeModel(), FakeModel()
    a = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=first, model_fingerprint="m1")
    b = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=second, model_fingerprint="m1")
    assert len(first.calls) == 30 and len(second.calls) == 0 and a.samples == b.samples
    build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=other, model_fingerprint="m2")
    assert len(other.calls) == 30  # another model: asked again
    assert (world[2] / "answers" / "answers.json").is_file()


def test_batched_answers_give_the_same_training_set_in_batches(world, tmp_path):
    """``answer_many`` (batched generation) is asked the same questions as ``answer_fn``, 20 at a time, and
    the training set is the same; answers are cached after each batch."""
    one_by_one = FakeModel()
    a = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=one_by_one, cache_dir=tmp_path / "a")
    batches = []

    def answer_many(pairs):
        batches.append(len(pairs))
        return [FakeModel()(q, img) for q, img in pairs]

    b = build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=None, answer_many=answer_many, cache_dir=tmp_path / "b")
    assert a.samples == b.samples and batches == [20, 10] and len(one_by_one.calls) == 30
    build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=None, answer_many=answer_many, cache_dir=tmp_path / "b")
    assert batches == [20, 10]  # all cached: not asked again
    with pytest.raises(RuntimeError, match="2 answers for 20"):
        build(world, n_easy_negatives=0, hard_negatives=False, answer_fn=None, answer_many=lambda pairs: ["a", "b"],
              cache_dir=tmp_path / "c")


def test_photo_problems(world, tmp_path):
    photos, pool, _ = world
    with pytest.raises(NotEnoughPhotosError):
        build_training_set("bo", [], pool, conversations=False)
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(NotEnoughPhotosError, match="bad.jpg"):
        build_training_set("bo", [bad], pool, conversations=False)
    dup = tmp_path / "dup.jpg"
    shutil.copy(photos[0], dup)
    ts = build_training_set("bo", [*photos, dup, bad], pool, conversations=False, n_easy_negatives=3, n_hard_negatives=3)
    assert ts.positives == photos and [p for p, _ in ts.skipped] == [bad]
    folder = build_training_set("bo", [photos[0].parent], pool, conversations=False, n_easy_negatives=1, n_hard_negatives=0)
    assert folder.positives == photos


def test_save_load_and_contact_sheet(world, tmp_path):
    ts = build(world, n_easy_negatives=4, n_hard_negatives=6)
    path = ts.save(tmp_path / "out" / "training_set.json")
    back = TrainingSet.load(path)
    assert back.samples == ts.samples and back.hard_negatives == ts.hard_negatives and back.counts == ts.counts
    assert json.loads(path.read_text())["counts"]["conversation"] == 30
    png = contact_sheet(ts, tmp_path / "sheet.png")
    img = Image.open(png)
    assert img.format == "PNG" and img.width > 200 and img.height > 200


def test_cli_build_and_show(world, tmp_path, monkeypatch):
    photos, _, _ = world
    monkeypatch.setattr("yollava.data.pool.default_embedder", ColourEmbedder)
    monkeypatch.setenv("YOLLAVA_CACHE", str(tmp_path / "cache"))
    model = FakeModel()

    class FakeEngine:  # what `data build` asks of the base model: its fingerprint and batched, exact answers
        def __init__(self, name):
            self.name = name

        def fingerprint(self):
            return {"fake": self.name}

        def chat_many(self, pairs, max_new_tokens, exact):
            assert exact and max_new_tokens > 0
            return [model(q, img) for q, img in pairs]

    monkeypatch.setattr("yollava.engine.Engine.from_pretrained", classmethod(lambda cls, name="pocket": FakeEngine(name)))
    runner = CliRunner()
    pool_dir = photos[0].parent.parent / "pool"
    r = runner.invoke(commands.pool_app, ["index", str(pool_dir), "--index-dir", str(tmp_path / "i2")])
    assert r.exit_code == 0, r.output
    assert "41 photos" in r.output and "broken.jpg" in r.output
    args = ["build", "bo", *map(str, photos), "--out", str(tmp_path / "data"), "--pool", str(pool_dir),
            "--index-dir", str(tmp_path / "i2"), "--n-easy", "5", "--n-hard", "6", "--model", "tiny", "--seed", "3", "--recipe", "paper"]
    r = runner.invoke(commands.data_app, args)
    assert r.exit_code == 0, r.output
    saved = TrainingSet.load(tmp_path / "data" / "bo" / "training_set.json")
    assert saved.counts == {"positive": 3, "negative": 5, "hard_negative": 6, "scene_negative": 0, "given_negative": 0, "conversation": 30, "caption": 0, "other_caption": 0}
    assert saved.config["model_fingerprint"] == json.dumps({"fake": "tiny"}) and len(model.calls) == 30
    r = runner.invoke(commands.data_app, ["show", "bo", "--data-dir", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    assert "hard_negative: 6" in r.output and (tmp_path / "data" / "bo" / "contact_sheet.png").is_file()
    r = runner.invoke(commands.data_app, ["build", "bo", *map(str, photos), "--out", str(tmp_path / "d2"), "--pool",
                                          str(pool_dir), "--index-dir", str(tmp_path / "i2"), "--no-conversations",
                                          "--no-hard-negatives", "--n-easy", "2"])
    assert r.exit_code == 0, r.output
    fast = TrainingSet.load(tmp_path / "d2" / "bo" / "training_set.json")  # the default recipe: fast
    assert fast.config["short_answers"] and fast.config["calibration_negatives"] == 40
    easy = [s for s in fast.samples if s.kind == "negative" and not s.calibration]
    assert len({s.image for s in easy}) == 2 and {s.answer for s in easy} >= {"No"}
    r = runner.invoke(commands.data_app, ["show", "nobody", "--data-dir", str(tmp_path / "data")])
    assert r.exit_code == 1 and "no training set" in r.output


def test_conversation_photos_limits_the_photos_asked_about(tmp_path):
    photos = [tmp_path / f"p{i}.jpg" for i in range(3)]
    for i, p in enumerate(photos):
        Image.new("RGB", (16, 16), (40 * i, 10, 10)).save(p)
    asked = []
    ts = build_training_set("bo", photos, None, answer_fn=lambda q, img: asked.append(img) or "It is red.",
                            n_easy_negatives=0, hard_negatives=False, conversation_photos=2, cache_dir=tmp_path / "c")
    assert {a.name for a in asked} == {"p0.jpg", "p1.jpg"}
    assert ts.counts["conversation"] == 20 and ts.config["conversation_photos"] == 2
