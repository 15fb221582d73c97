"""Named recipes: the paper's settings, the fast recipe's training set, and the round trip through the concept JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from yollava.concepts import read_meta
from yollava.data.pool import ImagePool
from yollava.data.templates import SHORT_QUERIES
from yollava.prompts import RECOGNITION_QUERY
from yollava import YoLLaVA
from yollava.personalize import ConceptPipeline, personalize
from yollava.recipes import RECIPES, Recipe, get_recipe, recipe_from_options, resolve_recipe
from yollava.train import Sample, recognition_metrics

from .conftest import ColourEmbedder, make_photos, other_colour, reddish


pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


@pytest.fixture
def pool(tmp_path):
    folder = tmp_path / "pool"
    make_photos(folder / "blue", 40, other_colour, seed=5)
    greenish = lambda rng: (rng.randint(0, 60), 160 + rng.randint(-40, 40), rng.randint(0, 60))  # noqa: E731
    make_photos(folder / "green", 30, greenish, seed=6)
    return ImagePool.build_or_update([folder], tmp_path / "index", ColourEmbedder(), progress=False)


def tiny(recipe: str) -> Recipe:
    """The named recipe at a size a tiny model trains in seconds (counts only; the rest as named)."""
    return get_recipe(recipe).override(k=2, n_easy_negatives=12, n_hard_negatives=8, conversation_tokens=3,
                                       **({"calibration_negatives": 10} if get_recipe(recipe).data.calibration_negatives else {}))


def test_paper_recipe_is_the_papers_settings_field_by_field():
    paper = get_recipe("paper")
    assert dataclasses.asdict(paper.train) == {
        "k": 16, "lr": 1e-3, "epochs": 15, "batch_size": 8, "weight_decay": 0.0, "seed": 0, "holdout_fraction": 0.2,
        "balance_positives": True, "balance_by": None, "positive_repeats": None, "patience": None, "eval_every": 1, "prefix_cache": True, "select_best_epoch": True,
        "gradient_checkpointing": False, "precision": None, "init": None, "repeat_captions": False, "injection": None, "reading": None}
    assert dataclasses.asdict(paper.data) == {
        "category": "object", "n_easy_negatives": 100, "n_hard_negatives": 100, "hard_negatives": True, "conversations": True,
        "conversation_photos": None, "conversation_tokens": 48, "sentence_answers": True, "sentence_negatives": None,
        "short_answers": False, "positive_views": 0, "calibration_negatives": 0, "calibration_views": 0, "caption_photos": 0,
        "caption_negatives": 0, "scene_negatives": 0}


def test_fast_is_the_default_and_overrides_rename_it():
    assert resolve_recipe().name == "fast" and get_recipe() == RECIPES["fast"] and get_recipe() is not RECIPES["fast"]
    assert recipe_from_options("fast").name == "fast"
    assert recipe_from_options("fast", category="person").name == "fast"  # the subject's category is not a recipe change
    changed = recipe_from_options("fast", epochs=3, no_conversations=True)
    assert changed.name == "fast-modified" and changed.train.epochs == 3 and not changed.data.conversations
    with pytest.raises(ValueError, match="unknown recipe 'quick'"):
        get_recipe("quick")
    with pytest.raises(ValueError, match="unknown recipe setting"):
        get_recipe("fast").override(epoch=3)
    with pytest.raises(ValueError, match="sentence_answers or short_answers"):
        recipe_from_options("fast", no_short_answers=True, no_sentence_answers=True)


def test_accurate_is_fast_with_three_epochs_and_nothing_else():
    fast, accurate = get_recipe("fast"), get_recipe("accurate")
    assert accurate.data == fast.data
    assert dataclasses.asdict(accurate.train) == {**dataclasses.asdict(fast.train), "epochs": 3}
    # fast with --epochs 3 is the same training, but it keeps the name it was asked by
    assert recipe_from_options("fast", epochs=3).train == accurate.train
    assert recipe_from_options("accurate").name == "accurate" and recipe_from_options("accurate", epochs=1).name == "accurate-modified"


def test_fast_training_set_asks_the_products_query_with_one_word_answers(llava_engine: YoLLaVA, pool, tmp_path):
    photos = make_photos(tmp_path / "bo", 4, reddish, seed=1)
    recipe = tiny("fast")
    ts = ConceptPipeline(llava_engine, recipe, pool=pool).training_set("bo", photos)
    short = [s for s in ts.samples if s.answer in ("Yes", "No")]
    recognition = {(str(s.image), s.view) for s in ts.samples if s.is_recognition and not s.calibration}
    # every recognition photo (and every view of a positive) has a short-answer sample
    assert recognition == {(str(s.image), s.view) for s in short if not s.calibration}
    assert all(s.question in {q.format(identifier="<bo>") for q in SHORT_QUERIES} for s in short)
    assert sum(s.question == RECOGNITION_QUERY.format(identifier="<bo>") for s in short) >= len(short) // 4
    assert all((s.answer == "Yes") == s.is_positive for s in short)
    # positives: the photos themselves (the trainer repeats them to balance the negatives)
    n_neg = sum(s.kind in ("negative", "hard_negative") and s.answer == "No" and not s.calibration for s in ts.samples)
    n_pos_short = sum(s.is_positive and s.answer == "Yes" and not s.calibration for s in ts.samples)
    assert n_neg == 20 and n_pos_short == 4 and all(s.view == 0 for s in short if not s.calibration)
    # positive_views=None: augmented views up to the negatives' count instead of repeated pixels
    views = ConceptPipeline(llava_engine, recipe, data=dataclasses.replace(recipe.data, positive_views=None), pool=pool).training_set("bo", photos)
    assert sum(s.is_positive and s.answer == "Yes" and not s.calibration for s in views.samples) == 20
    assert max(s.view for s in views.samples if not s.calibration) == 4
    # sentence answers stay on every positive photo and on 'sentence_negatives' negatives
    sentences = [s for s in ts.samples if s.is_recognition and s.answer not in ("Yes", "No")]
    assert sum(s.is_positive for s in sentences) == 4 and sum(not s.is_positive for s in sentences) == recipe.data.sentence_negatives
    # calibration: unused pool photos and unseen views of the positives, never among the training photos
    calib = [s for s in ts.samples if s.calibration]
    assert sum(not s.is_positive for s in calib) == 10 and sum(s.is_positive for s in calib) == 4 * recipe.data.calibration_views
    trained_photos = {str(s.image) for s in ts.samples if s.image is not None and not s.calibration}
    assert not {str(s.image) for s in calib if not s.is_positive} & trained_photos
    assert all(s.view >= 1000 for s in calib if s.is_positive)
    assert sum(s.kind == "conversation" for s in ts.samples) == 2 * 10  # conversations about 2 photos


@pytest.mark.slow
def test_fast_recipe_separates_a_synthetic_concept_at_its_own_threshold(llava_engine: YoLLaVA, pool, tmp_path):
    photos = make_photos(tmp_path / "bo", 4, reddish, seed=1)
    before = {k: v.clone() for k, v in llava_engine.adapter.model.state_dict().items()}
    result = personalize(llava_engine, "bo", photos, recipe=get_recipe("fast").override(
        k=4, n_easy_negatives=12, n_hard_negatives=8, calibration_negatives=10, lr=1e-2, epochs=10,
        # a random tiny model cannot learn the sentence answers', conversations' or captions' words; the Yes/No decision it can
        conversations=False, sentence_answers=False, caption_photos=0), pool=pool)
    assert all(torch.equal(before[k], v) for k, v in llava_engine.adapter.model.state_dict().items())
    concept = result.concept
    # a fixed schedule: the last epoch is kept, whatever the calibration samples say
    assert concept.meta["recipe"]["name"] == "fast-modified" and result.best_epoch == 9
    test_pos = make_photos(tmp_path / "test_pos", 10, reddish, seed=11)
    test_neg = make_photos(tmp_path / "test_neg", 10, other_colour, seed=12)
    scores = llava_engine.yes_probabilities("bo", test_pos + test_neg)
    m = recognition_metrics([True] * 10 + [False] * 10, scores, concept.threshold)
    assert m["weighted_accuracy"] >= 0.85, (m, concept.threshold)
    # the threshold was set on the calibration samples, not left at 0.5 by default
    holdout = concept.meta["metrics"]["holdout"]
    assert "calibrated_threshold" in holdout and len(holdout["scores"]) == 10 + 4 * 2


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.slow
def test_each_named_recipe_round_trips_through_the_concept_json(llava_engine: YoLLaVA, pool, tmp_path, name):
    photos = make_photos(tmp_path / "bo", 3, reddish, seed=1)
    recipe = tiny(name).override(epochs=1)
    personalize(llava_engine, "bo", photos, recipe=recipe, pool=pool)
    meta = read_meta(llava_engine.concepts_dir, "bo")
    stored = json.loads(json.dumps(meta["recipe"]))
    assert stored["name"] == f"{name}-modified"
    assert Recipe.from_dict(stored).to_dict() == resolve_recipe(recipe).to_dict()
    assert Recipe.from_dict(stored).train == recipe.train and Recipe.from_dict(stored).data == recipe.data


def test_settings_added_later_leave_old_run_folders_and_concepts_valid():
    """``balance_by`` / ``positive_repeats`` came after run folders and concepts were stored: their defaults are
    None (the behaviour those had: positives repeated), so an old run folder's protocol still matches and an old
    recipe reads back as it trained; a stored value wins."""
    from yollava.eval.store import settings_differences
    from yollava.train.trainer import epoch_samples

    stored = get_recipe("fast").to_dict()
    for key in ("balance_by", "positive_repeats"):
        del stored["train"][key]
    assert settings_differences(stored, get_recipe("fast").to_dict()) == []
    assert settings_differences(stored, get_recipe("fast").override(balance_by="weight").to_dict()) != []
    samples = [Sample("q", "Yes", f"p{i}.jpg", "positive") for i in range(2)] + [Sample("q", "No", f"n{i}.jpg", "negative") for i in range(6)]
    assert len(epoch_samples(samples, Recipe.from_dict(stored).train)[0]) == 6 + 2 * 3  # repeated, as before
    stored["train"]["balance_by"] = "weight"
    assert Recipe.from_dict(stored).train.balance_by == "weight"
    # a concept stored before ``precision`` trained in the model's own precision, whatever fast says now
    del stored["train"]["precision"]
    assert Recipe.from_dict(stored).train.precision is None
    # an old run folder's protocol matches a run in the model's own precision; "auto" is another protocol
    old = get_recipe("fast").to_dict()
    del old["train"]["precision"]
    assert settings_differences(old, recipe_from_options("fast", precision="model").to_dict()) == []
    assert settings_differences(old, recipe_from_options("fast", precision="auto").to_dict()) == [
        "train.precision: None (run folder) vs 'auto' (now)"]
    assert recipe_from_options("fast", precision="model").train.precision is None
    assert recipe_from_options("fast", precision="model").name == "fast"  # a runtime choice, not another recipe
    assert recipe_from_options("fast", precision="bf16").train.precision == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        recipe_from_options("fast", precision="fp8")
    assert Recipe.from_dict({"name": "fast"}).train == get_recipe("fast").train  # no stored settings: the recipe as named


def test_both_configs_check_their_values_and_data_config_lives_beside_the_recipe():
    import importlib

    import yollava
    from yollava.recipes import DataConfig
    from yollava.train import TrainConfig

    personalize_module = importlib.import_module("yollava.personalize")  # (the package re-exports a function of that name)
    assert personalize_module.DataConfig is DataConfig and yollava.DataConfig is DataConfig  # old imports still work
    for bad in ({"k": 0}, {"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -1e-3}, {"lr": float("inf")}, {"weight_decay": -0.1},
                {"holdout_fraction": 1.0}, {"holdout_fraction": -0.1}, {"patience": 0}, {"eval_every": 0}, {"seed": -1}, {"k": 2.5}, {"k": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    for bad in ({"category": "pet"}, {"n_easy_negatives": -1}, {"n_hard_negatives": -1}, {"conversation_tokens": -1},
                {"calibration_views": -1}, {"conversation_photos": -2}, {"sentence_negatives": -1}, {"positive_views": -1},
                {"n_easy_negatives": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DataConfig(**bad)
    # the named recipes are valid, and a change made through the recipe is checked too
    for name in RECIPES:
        dataclasses.replace(get_recipe(name).train)
        dataclasses.replace(get_recipe(name).data)
    with pytest.raises(ValueError, match="lr"):
        get_recipe("fast").override(lr=-1.0)
    with pytest.raises(ValueError, match="n_easy_negatives"):
        recipe_from_options("paper", n_easy=-5)
    assert TrainConfig(patience=None, holdout_fraction=0.0, lr=1).lr == 1  # edge values that are fine
    assert DataConfig(conversation_photos=None, sentence_negatives=None, positive_views=None).positive_views is None


def test_fast_before_session_12_is_two_ablation_flags_away():
    old = recipe_from_options("fast", no_visual_init=True, no_captions=True)
    assert old.name == "fast-modified" and old.train.init is None and not old.train.repeat_captions and old.data.caption_photos == 0
    fast = get_recipe("fast")
    assert fast.train.init == "visual-global" and fast.train.repeat_captions and fast.data.caption_photos == 4
    # everything else is fast's
    assert dataclasses.replace(old.train, init=fast.train.init, repeat_captions=True) == fast.train
    assert dataclasses.replace(old.data, caption_photos=4) == fast.data
