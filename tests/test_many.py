"""``personalize-many``: a folder of subjects, trained together locally or spread over Ray workers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from yollava.concepts import load_concept
from yollava.errors import InvalidConceptNameError, NotEnoughPhotosError
from yollava.many import discover_subjects, library_negatives, personalize_many
from yollava.personalize import DataConfig
from yollava.train import TrainConfig

from .conftest import make_photos, other_colour, reddish

FAST = TrainConfig(k=2, epochs=1, batch_size=4)
NO_EXTRA_DATA = DataConfig(n_easy_negatives=0, hard_negatives=False, conversations=False)


@pytest.fixture
def subjects_dir(tmp_path):
    make_photos(tmp_path / "subjects" / "bo", 3, reddish, seed=1)
    make_photos(tmp_path / "subjects" / "anna", 3, other_colour, seed=2)
    (tmp_path / "subjects" / "empty").mkdir()
    return tmp_path / "subjects"


def test_discover_subjects(subjects_dir, tmp_path):
    found = discover_subjects(subjects_dir)
    assert sorted(found) == ["anna", "bo"] and all(len(v) == 3 for v in found.values())
    (subjects_dir / "bad name").mkdir()
    make_photos(subjects_dir / "bad name", 1, reddish)
    with pytest.raises(InvalidConceptNameError):
        discover_subjects(subjects_dir)
    with pytest.raises(NotEnoughPhotosError):
        discover_subjects(tmp_path / "nowhere")


def test_local_run_trains_and_saves_every_subject(subjects_dir, llava_engine, tmp_path):
    saved = personalize_many("unused", subjects_dir, tmp_path / "out", train=FAST, data=NO_EXTRA_DATA, engine=llava_engine, progress=False)
    assert sorted(saved) == ["anna", "bo"]
    fp = llava_engine.fingerprint()
    concepts = {n: load_concept(tmp_path / "out", n, fp) for n in saved}
    assert not torch.equal(concepts["bo"].input_rows, concepts["anna"].input_rows)
    with pytest.raises(InvalidConceptNameError, match="already exist"):
        personalize_many("unused", subjects_dir, tmp_path / "out", train=FAST, data=NO_EXTRA_DATA, engine=llava_engine, progress=False)


def test_library_negatives_train_each_subject_against_the_others(subjects_dir, llava_engine, tmp_path):
    subjects = discover_subjects(subjects_dir)
    assert library_negatives(subjects) == {"anna": subjects["bo"], "bo": subjects["anna"]}
    shared = subjects_dir / "anna" / "shared.jpg"  # a photo of both, filed under anna too: never a negative of bo
    shared.write_bytes(subjects["bo"][0].read_bytes())
    assert library_negatives(discover_subjects(subjects_dir))["bo"] == subjects["anna"]
    shared.unlink()
    saved = personalize_many("unused", subjects_dir, tmp_path / "out", train=FAST, data=NO_EXTRA_DATA, engine=llava_engine, progress=False,
                             library=True)
    fp = llava_engine.fingerprint()
    for name in saved:
        data = load_concept(tmp_path / "out", name, fp).meta["data"]
        assert data["given_negatives"] == 3 and data["given_negative_sha256"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -e '.[test]')")
@pytest.mark.slow
def test_ray_run_on_a_local_instance(subjects_dir, tiny_model_dirs, tmp_path):
    import ray

    try:
        saved = personalize_many(str(tiny_model_dirs["llava"]), subjects_dir, tmp_path / "out", train=FAST, data=NO_EXTRA_DATA, ray_address="local", groups=2,
                                 library=True)
    finally:
        ray.shutdown()
    assert sorted(saved) == ["anna", "bo"]
    from yollava import YoLLaVA

    engine = YoLLaVA.from_pretrained(str(tiny_model_dirs["llava"]), tmp_path / "out")
    for name in ("bo", "anna"):
        concept = engine.load_concept(name)  # fingerprints reported by the workers match the model
        # one subject per worker group, and still the other subject's 3 photos as its library negatives
        assert concept.meta["data"]["given_negatives"] == 3
    assert isinstance(engine.chat("Are <bo> and <anna> here?", max_new_tokens=2), str)
