"""How a concept's yes/no is read from a photo (``Concept.reading``): the whole photo, or the best of its views."""

from __future__ import annotations

from dataclasses import replace

import pytest

from yollava import who as W
from yollava.concepts import load_concept, validate_meta
from yollava.engine import Engine
from yollava.errors import CorruptConceptError
from yollava.images import photo_views
from yollava.prompts import RECOGNITION_QUERY
from yollava.recipes import TrainConfig, get_recipe

from .test_who import engine, world  # noqa: F401  (engine, world: test_who's fixtures: a tiny model, its palette world)

pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


def _by_hand(engine, name, photo) -> list[float]:
    query = RECOGNITION_QUERY.format(identifier=f"<{name}>")
    return engine.prompt_yes_probabilities(query, photo_views(photo), concepts=[name])


def test_views_reading_is_the_best_view_and_whole_is_unchanged(engine, world):
    photos = world["subjects"]["red"][4:6]
    engine.new_concept("whole", 2, seed=0)
    engine.new_concept("viewed", 2, seed=0, reading="views")
    assert engine.bank["whole"].reading == "whole" and engine.bank["viewed"].reading == "views"
    for photo in photos:
        views = _by_hand(engine, "viewed", photo)
        assert len(views) >= 5  # the whole photo + four corners at least
        assert engine.yes_probabilities("viewed", [photo])[0] == pytest.approx(max(views), abs=1e-7)
        whole_query = RECOGNITION_QUERY.format(identifier="<whole>")
        assert engine.yes_probabilities("whole", [photo]) == engine.prompt_yes_probabilities(whole_query, [photo], concepts=["whole"])
    # one photo, several concepts (who-is-here): each read its own way, as yes_probabilities reads it alone
    both = engine.concept_yes_probabilities(photos[0], ["viewed", "whole"])
    assert both == pytest.approx([engine.yes_probabilities("viewed", [photos[0]])[0], engine.yes_probabilities("whole", [photos[0]])[0]], abs=1e-6)
    encoded = engine.encode_image(photos[0])
    assert engine.concept_yes_probabilities(encoded, ["viewed"], photo=photos[0]) == pytest.approx(both[:1], abs=1e-6)
    with pytest.raises(ValueError, match="needs the photo itself"):
        engine.concept_yes_probabilities(encoded, ["viewed"])
    with pytest.raises(ValueError, match="reading must be one of"):
        engine.new_concept("odd", 2, reading="sideways")


def test_reading_is_stored_checked_and_used_by_who(engine, world):
    c = engine.new_concept("red", 2, seed=0, reading="views")
    sig = W.fit_signature(world["subjects"]["red"][:4], W.embedder_for(engine), world["pool"], seed=0)
    c.meta["stage"] = "trained"
    engine.add_concept(W.attach_signature(c, sig), replace=True)
    engine.save_concept("red")
    loaded = load_concept(engine.concepts_dir, "red", engine.fingerprint())
    assert loaded.reading == "views"
    with pytest.raises(CorruptConceptError, match="reading"):
        validate_meta({"reading": "sideways"}, "red")
    photo = world["subjects"]["red"][5]
    found = W.recognize(engine, "red", photo, mode="yollava")
    assert found.p_yes == pytest.approx(max(_by_hand(engine, "red", photo)), abs=1e-7)


def test_a_views_concept_is_calibrated_on_the_photos_themselves(engine, world, monkeypatch):
    recipe = get_recipe("fast")
    train = replace(recipe.train, epochs=1, reading="views")
    data = replace(recipe.data, conversations=False, n_easy_negatives=6, n_hard_negatives=2, calibration_negatives=4, caption_photos=0)
    seen = []
    real = Engine.yes_probabilities

    def spy(self, name, images, batch_size=8):
        seen.extend(images)
        return real(self, name, images, batch_size)

    monkeypatch.setattr(Engine, "yes_probabilities", spy)
    result = engine.personalize("red", world["subjects"]["red"][:4], recipe="fast", train=train, data=data, pool=world["pool"], progress=False)
    monkeypatch.undo()
    assert result.concept.reading == "views"
    assert seen and not any(isinstance(x, type(engine.encode_image(world["subjects"]["red"][0]))) for x in seen)
    assert result.holdout.get("n_positive") and result.holdout.get("n_negative")
    with pytest.raises(ValueError, match="reading must be"):
        TrainConfig(reading="sideways")


def test_the_views_differ_from_the_whole_photo_here(engine, world):
    """Guards the tests above: on these photos the best view is not the whole photo's score, so a reading that
    ignored the views would fail them."""
    engine.new_concept("viewed", 2, seed=0, reading="views")
    photo = world["subjects"]["red"][4]
    views = _by_hand(engine, "viewed", photo)
    assert max(views) - views[0] > 3e-6  # the tiny model's P(yes) is near 1: the tests above compare to 1e-7
