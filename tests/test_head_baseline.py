"""The concept-head baseline (logistic regression on the pool embedder's features) ranks perfectly when the
subjects are separable in those features, and only then: synthetic subjects of distinct colours, a pool of other
colours, the colour embedder."""

from __future__ import annotations

import shutil

import pytest
import torch

from yollava.data.pool import ImagePool
from yollava import YoLLaVA
from yollava.eval.datasets import load_folder
from yollava.eval import get_task, run_benchmark
from yollava.personalize import DataConfig

from .conftest import ColourEmbedder, make_photos


def tinted(rgb, spread=20):
    return lambda rng: tuple(max(0, min(255, c + rng.randint(-spread, spread))) for c in rgb)


SUBJECTS = {"red_mug": (220, 30, 30), "green_toy": (30, 200, 40), "blue_cat": (30, 40, 210)}
POOL = {"yellow": (230, 220, 40), "purple": (150, 40, 160), "grey": (128, 128, 128), "cyan": (40, 210, 210)}


pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


@pytest.fixture
def separable(tmp_path):
    ds = tmp_path / "subjects"
    for i, (name, rgb) in enumerate(SUBJECTS.items()):
        make_photos(ds / name, 6, tinted(rgb), seed=10 + i, size=32)
    for i, (name, rgb) in enumerate(POOL.items()):
        make_photos(tmp_path / "pool" / name, 8, tinted(rgb), seed=50 + i, size=32)
    pool = ImagePool.build_or_update([tmp_path / "pool"], tmp_path / "index", ColourEmbedder(), progress=False)
    return ds, pool


def _head(engine, ds_dir, pool, run_dir):
    task = get_task("recognition")(load_folder(ds_dir, train_per_subject=3, seed=0), pool_negatives=4, pool_hard_negatives=2)
    return run_benchmark(task, engine, ["head"], run_dir, pool_fn=lambda: pool, data=DataConfig(n_easy_negatives=8, n_hard_negatives=6),
                         progress=False, echo=lambda m: None)


def test_head_reaches_auc_1_on_separable_subjects(llava_engine: YoLLaVA, separable, tmp_path):
    ds, pool = separable
    res = _head(llava_engine, ds, pool, tmp_path / "run")
    per = res["per_subject"]["head"]
    assert sorted(per) == sorted(SUBJECTS)
    for name, m in per.items():
        # 3 test photos of the subject vs the other subjects' 6 test photos and 4 + 2 held-out pool photos
        assert m["auc"] == 1.0 and m["n_positive"] == 3 and m["n_negative"] == 12, (name, m)
    assert res["overall"]["head"]["auc"] == 1.0 and res["overall"]["head"]["weighted_accuracy"] >= 0.9, res["overall"]["head"]


def test_heads_share_a_run_s_embedded_photos_and_score_as_alone(llava_engine: YoLLaVA, separable, tmp_path, monkeypatch):
    """Every subject's head reads the same test photos: each photo is embedded once per run (not once per subject),
    and the scores are those a head gives on its own."""
    import numpy as np

    import yollava.who.verify as verify
    from yollava.who import fit_signature, head_scores

    ds, pool = separable
    calls: list[str] = []
    real = verify.embed_query

    def counting(embedder, image, multi_crop=True):
        calls.append(str(image))
        return real(embedder, image, multi_crop)

    monkeypatch.setattr(verify, "embed_query", counting)
    res = _head(llava_engine, ds, pool, tmp_path / "run")
    assert len(calls) == len(set(calls)) and res["overall"]["head"]["subjects"] == 3
    photos = sorted((ds / "red_mug").glob("*.jpg"))
    sig = fit_signature(photos[:3], pool.embedder, pool, seed=0)
    kept: dict = {}
    assert np.allclose(head_scores(sig, pool.embedder, photos, views=kept), head_scores(sig, pool.embedder, photos))
    assert set(kept) == {str(p) for p in photos}


def test_head_does_not_reach_auc_1_when_two_subjects_look_the_same(llava_engine: YoLLaVA, separable, tmp_path):
    ds, pool = separable
    shutil.rmtree(ds / "blue_cat")
    make_photos(ds / "red_cup", 6, tinted(SUBJECTS["red_mug"]), seed=11, size=32)  # the red mug's look-alike
    res = _head(llava_engine, ds, pool, tmp_path / "run")
    per = res["per_subject"]["head"]
    assert per["green_toy"]["auc"] == 1.0
    assert per["red_mug"]["auc"] < 1.0 and per["red_cup"]["auc"] < 1.0, per  # the look-alike ranks among the positives


def test_probes_use_the_heads_classifier_on_the_models_own_representations(llava_engine: YoLLaVA, separable, tmp_path):
    """probe-visual reads the visual tokens the LLM receives, probe-llm the LLM's answer-position state: on
    subjects of distinct colours both separate like the head; the features are exactly those representations."""
    import numpy as np

    from yollava.prompts import RECOGNITION_QUERY
    from yollava.eval.methods import EvalContext, Unavailable
    from yollava.eval.registry import make_method

    ds, pool = separable
    task = get_task("recognition")(load_folder(ds, train_per_subject=3, seed=0), pool_negatives=4, pool_hard_negatives=2)
    res = run_benchmark(task, llava_engine, ["head", "probe-visual", "probe-llm", "probe-llm-z"], tmp_path / "run", pool_fn=lambda: pool,
                        data=DataConfig(n_easy_negatives=8, n_hard_negatives=6), progress=False, echo=lambda m: None)
    for method in ("probe-visual", "probe-llm", "probe-llm-z"):
        assert res["overall"][method]["auc"] >= 0.9, (method, res["overall"][method])
    assert make_method("probe-llm-z").standardize and not make_method("probe-llm").standardize
    photo = sorted((ds / "red_mug").glob("*"))[0]
    other = sorted((ds / "green_toy").glob("*"))[0]
    ctx = EvalContext(llava_engine, tmp_path / "ctx")
    visual, state = make_method("probe-visual"), make_method("probe-llm")
    assert np.allclose(visual.features(ctx, photo), llava_engine.encode_image(photo).features.float().flatten().numpy())
    encoded = llava_engine.encode(RECOGNITION_QUERY.format(identifier="sks"), image=photo)
    with torch.no_grad():
        hidden = llava_engine.hidden_states([encoded])[0][0, -1]
    assert np.allclose(state.features(ctx, photo), hidden.float().numpy(), atol=1e-5)
    assert not np.allclose(state.features(ctx, photo), state.features(ctx, other), atol=1e-3)  # the photo reaches the answer state
    with pytest.raises(Unavailable, match="pocket's pooled grid"):  # a family without it says so (a record, not a crash)
        make_method("probe-pooled").features(ctx, photo)
