"""The trainer: frozen base, learning on a tiny model, resume, bad input."""

from __future__ import annotations

import pytest
import torch

from yollava import YoLLaVA
from yollava.errors import InvalidImageError, NotEnoughPhotosError
from yollava.personalize import DataConfig, check_photos, personalize
from yollava.train import ConceptTrainer, Sample, TrainConfig, recognition_metrics, split_holdout
from yollava.train import trainer as trainer_module

from .conftest import make_photos, other_colour, reddish

QUESTION = "Is <bo> in this photo?"


def recognition_samples(tmp_path, n_pos=10, n_neg=30):
    pos = make_photos(tmp_path / "pos", n_pos, reddish, seed=1)
    neg = make_photos(tmp_path / "neg", n_neg, other_colour, seed=2)
    return [Sample(QUESTION, "Yes", p, "positive") for p in pos] + [Sample(QUESTION, "No", p, "negative") for p in neg]


def test_tiny_model_learns_a_synthetic_concept_and_base_stays_bit_identical(llava_engine: YoLLaVA, tmp_path):
    samples = recognition_samples(tmp_path)
    before = {k: v.clone() for k, v in llava_engine.adapter.model.state_dict().items()}
    cfg = TrainConfig(k=4, epochs=8, lr=1e-2, batch_size=8, seed=0)
    result = ConceptTrainer(llava_engine, "bo", cfg, progress=False).fit(samples)
    after = llava_engine.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # fresh photos of both kinds, never seen in training
    test_pos = make_photos(tmp_path / "test_pos", 10, reddish, seed=11)
    test_neg = make_photos(tmp_path / "test_neg", 10, other_colour, seed=12)
    scores = llava_engine.yes_probabilities("bo", test_pos + test_neg)
    m = recognition_metrics([True] * 10 + [False] * 10, scores, result.concept.threshold)
    assert m["weighted_accuracy"] >= 0.8, m
    assert m["auc"] >= 0.9, m
    assert result.concept.meta["metrics"]["best_epoch"] == result.best_epoch


def test_holdout_is_stratified_and_disjoint():
    samples = [Sample(QUESTION, "Yes", f"p{i}.jpg", "positive") for i in range(10)]
    samples += [Sample(QUESTION, "No", f"n{i}.jpg", "negative") for i in range(50)]
    samples += [Sample("What colour is <bo>?", "Red.", None, "conversation") for _ in range(5)]
    train, held = split_holdout(samples, 0.2, seed=0)
    assert sum(s.is_positive for s in held) == 2 and sum(not s.is_positive for s in held) == 10
    assert not {s.image for s in held} & {s.image for s in train if s.image}
    assert sum(s.kind == "conversation" for s in train) == 5
    assert split_holdout(samples, 0.2, seed=0) == (train, held)


def test_balance_by_weight_trains_each_positive_once_with_its_loss_weighted(llava_engine: YoLLaVA, tmp_path):
    samples = recognition_samples(tmp_path, n_pos=4, n_neg=12)
    cfg = TrainConfig(k=2, epochs=1, lr=1e-2, batch_size=4, seed=0, holdout_fraction=0.0, select_best_epoch=False)
    assert len(trainer_module.epoch_samples(samples, cfg)[0]) == 12 + 4 * 3  # repeat: positives 3x
    weighted_cfg = TrainConfig(**{**cfg.__dict__, "balance_by": "weight"})
    epoch, weights = trainer_module.epoch_samples(samples, weighted_cfg)
    assert epoch == samples and weights == [3.0 if s.is_positive else 1.0 for s in samples]
    seen = []
    real_loss = llava_engine.loss
    llava_engine.loss = lambda items, cache=None, w=None, precision=None: seen.append(w) or real_loss(items, cache, w, precision)
    try:
        result = ConceptTrainer(llava_engine, "bo", weighted_cfg, progress=False).fit(samples)
    finally:
        llava_engine.loss = real_loss
    assert result.samples_seen == 16 and len(seen) == 4  # 16 samples, not 24: 4 steps of 4
    assert sorted(x for w in seen for x in w) == [1.0] * 12 + [3.0] * 4
    with pytest.raises(ValueError, match="balance_by"):
        TrainConfig(balance_by="oversample")
    # between the two: each positive twice, weighted 1.5 (2 x 1.5 = the 3 repeats it needs)
    epoch, weights = trainer_module.epoch_samples(samples, TrainConfig(**{**weighted_cfg.__dict__, "positive_repeats": 2}))
    assert len(epoch) == 12 + 4 * 2 and sorted(set(weights)) == [1.0, 1.5]
    assert sum(w for s, w in zip(epoch, weights) if s.is_positive) == 12


def test_training_resumes_after_interruption(llava_engine: YoLLaVA, tmp_path, monkeypatch):
    samples = recognition_samples(tmp_path, n_pos=4, n_neg=8)
    cfg = TrainConfig(k=2, epochs=3, lr=1e-2, batch_size=4, seed=0)
    full = ConceptTrainer(llava_engine, "bo", cfg, progress=False).fit(samples).concept
    reference = (full.input_rows.clone(), full.output_row.clone())

    calls = {"n": 0}
    real = trainer_module._describe

    def crash_after_second_epoch(name, record):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(name, record)

    ckpt = tmp_path / "ckpt"
    monkeypatch.setattr(trainer_module, "_describe", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        ConceptTrainer(llava_engine, "bo", cfg, checkpoint_dir=ckpt, progress=False).fit(samples)
    monkeypatch.setattr(trainer_module, "_describe", real)
    assert (ckpt / "bo.ckpt.json").exists()
    resumed = ConceptTrainer(llava_engine, "bo", cfg, checkpoint_dir=ckpt, progress=False).fit(samples)
    assert len(resumed.history) == 3
    assert torch.allclose(resumed.concept.input_rows, reference[0], atol=1e-6)
    assert torch.allclose(resumed.concept.output_row, reference[1], atol=1e-6)


def test_no_positive_is_an_error(llava_engine: YoLLaVA):
    with pytest.raises(NotEnoughPhotosError):
        ConceptTrainer(llava_engine, "bo", TrainConfig(epochs=1), progress=False).fit([Sample(QUESTION, "No", None, "conversation")])


def test_photo_checks(tmp_path):
    with pytest.raises(NotEnoughPhotosError):
        check_photos([])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotEnoughPhotosError):
        check_photos([empty])
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(InvalidImageError, match="notes.jpg"):
        check_photos([text])
    good = make_photos(tmp_path / "good", 1, reddish)[0]
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InvalidImageError, match="cut.jpg"):
        check_photos([good, truncated])
    with pytest.raises(InvalidImageError, match="no such file"):
        check_photos([tmp_path / "missing.jpg"])


def test_personalize_refuses_bad_input_before_doing_work(llava_engine: YoLLaVA, tmp_path):
    photos = make_photos(tmp_path / "p", 3, reddish)
    no_data = DataConfig(n_easy_negatives=0, hard_negatives=False, conversations=False)
    from yollava.errors import InvalidConceptNameError

    with pytest.raises(InvalidConceptNameError):
        personalize(llava_engine, "../x", photos, data=no_data)
    with pytest.raises(InvalidConceptNameError):
        personalize(llava_engine, "image", photos, data=no_data)
    assert not llava_engine.concepts_dir.exists() or not any(llava_engine.concepts_dir.glob("*.json"))


def test_personalize_end_to_end_saves_a_loadable_concept(llava_engine: YoLLaVA, tmp_path):
    photos = make_photos(tmp_path / "p", 4, reddish)
    result = personalize(
        llava_engine, "bo", photos, train=TrainConfig(k=2, epochs=1, batch_size=4),
        data=DataConfig(n_easy_negatives=0, hard_negatives=False, conversations=False), progress=False,
    )
    meta_path = llava_engine.concepts_dir / "bo.json"
    assert meta_path.exists() and (llava_engine.concepts_dir / "bo.safetensors").exists()
    assert len(result.concept.meta["source_photos"]) == 4
    assert not any((llava_engine.concepts_dir / ".checkpoints").glob("bo.ckpt.*"))
    llava_engine.unload_concept("bo")
    llava_engine.load_concept("bo")
    r = llava_engine.recognize("bo", photos[0], mode="yollava")  # the language model alone, at the calibrated threshold
    assert r.mode == "yollava" and r.threshold == result.concept.threshold and r.answer == ("Yes" if r.p_yes >= r.threshold else "No")
    assert r.p_yes == llava_engine.yes_probabilities("bo", [photos[0]])[0]
    from yollava.who import DEFAULT_TRAINED_MODE

    assert llava_engine.recognize("bo", photos[0]).mode == DEFAULT_TRAINED_MODE  # the signature was fitted too: the measured best mode


def test_naive_reference_computes_the_same_loss_and_update(llava_engine: YoLLaVA, tmp_path):
    """The benchmark's yardstick learns the same thing: same loss, same first AdamW step on the concept rows."""
    from yollava.train.naive import NaiveTrainer

    photo = make_photos(tmp_path / "p", 1, reddish)[0]
    sample = Sample(QUESTION, "Yes, <bo> is here.", photo, "positive")
    naive = NaiveTrainer(llava_engine, "bo", k=2, lr=1e-2)
    concept = llava_engine.bank["bo"]
    fast_loss = llava_engine.loss([llava_engine.encode(sample.question, image=photo, answer=sample.answer)])
    torch.testing.assert_close(naive.step_loss(sample), fast_loss, rtol=1e-5, atol=1e-5)

    concept.requires_grad_(True)
    opt = torch.optim.AdamW([concept.input_rows, concept.output_row], lr=1e-2, weight_decay=0.0)
    llava_engine.loss([llava_engine.encode(sample.question, image=photo, answer=sample.answer)]).backward()
    opt.step()
    fast_rows = concept.input_rows.detach().clone()
    base = llava_engine.adapter.embed_tokens.weight.clone()
    naive.train([sample])
    assert torch.equal(llava_engine.adapter.embed_tokens.weight, base)
    assert torch.equal(naive.w_in[: naive.vocab], base)  # untouched rows restored
    torch.testing.assert_close(naive.w_in[naive.vocab :].detach(), fast_rows, rtol=1e-4, atol=1e-5)


def test_several_concepts_train_together_in_shared_batches(llava_engine: YoLLaVA, tmp_path):
    red = make_photos(tmp_path / "red", 6, reddish, seed=1)
    blue = make_photos(tmp_path / "blue", 6, other_colour, seed=2)
    data = {
        "bo": [Sample("Is <bo> in this photo?", "Yes", p, "positive") for p in red] + [Sample("Is <bo> in this photo?", "No", p, "negative") for p in blue],
        "anna": [Sample("Is <anna> in this photo?", "Yes", p, "positive") for p in blue] + [Sample("Is <anna> in this photo?", "No", p, "negative") for p in red],
    }
    trainer = ConceptTrainer(llava_engine, "pair", TrainConfig(k=2, epochs=2, lr=1e-2, batch_size=8), checkpoint_dir=tmp_path / "ck", progress=False)
    results = trainer.fit_many(data)
    encoded = [llava_engine.encode(s.question, image=s.image, answer=s.answer) for n in data for s in data[n]]
    assert any(min(b) < 12 <= max(b) for b in trainer.batches(encoded, 0))  # batches mix both concepts' samples
    assert set(results) == {"bo", "anna"}
    for name, r in results.items():
        assert llava_engine.bank[name] is r.concept and not r.concept.input_rows.requires_grad
        assert r.holdout["n_positive"] >= 1 and r.concept.meta["counts"]["positive"] == 6
    assert (tmp_path / "ck" / "pair.ckpt.json").exists()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(llava_engine: YoLLaVA, tmp_path):
    samples = recognition_samples(tmp_path, n_pos=2, n_neg=2)
    concept = llava_engine.new_concept("bo", k=2, seed=0)
    concept.requires_grad_(True)
    items = [llava_engine.encode(s.question, image=s.image, answer=s.answer, concepts=["bo"]) for s in samples]

    def loss_and_grads():
        concept.zero_grad(set_to_none=True)
        loss = llava_engine.loss(items)
        loss.backward()
        return loss.item(), concept.input_rows.grad.clone(), concept.output_row.grad.clone()

    plain = loss_and_grads()
    with llava_engine.adapter.gradient_checkpointing():
        assert llava_engine.adapter.model.training
        checkpointed = loss_and_grads()
    assert not llava_engine.adapter.model.training  # the previous (eval) mode is back
    assert abs(plain[0] - checkpointed[0]) < 1e-5
    assert torch.allclose(plain[1], checkpointed[1], atol=1e-6) and torch.allclose(plain[2], checkpointed[2], atol=1e-6)
    llava_engine.unload_concept("bo")

    before = {k: v.clone() for k, v in llava_engine.adapter.model.state_dict().items()}
    cfg = TrainConfig(k=2, epochs=1, lr=1e-2, batch_size=4, gradient_checkpointing=True)
    ConceptTrainer(llava_engine, "bo", cfg, progress=False).fit(samples)
    assert all(torch.equal(before[k], v) for k, v in llava_engine.adapter.model.state_dict().items())


def test_training_precision_is_checked_resolved_and_recorded(llava_engine: YoLLaVA, tmp_path):
    with pytest.raises(ValueError, match="precision must be"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="gradient checkpointing"):
        TrainConfig(precision="bf16", gradient_checkpointing=True)
    adapter = llava_engine.adapter  # an fp32 HF model: no bf16 copy of its own
    assert TrainConfig(precision="auto").training_precision(adapter) is None
    assert TrainConfig(precision="auto", gradient_checkpointing=True).training_precision(adapter) is None
    with pytest.raises(ValueError, match="cannot train in 'bf16'"):
        adapter.training_modules("bf16")
    samples = recognition_samples(tmp_path, n_pos=2, n_neg=2)
    cfg = TrainConfig(k=2, epochs=1, lr=1e-2, batch_size=4, holdout_fraction=0.0, select_best_epoch=False, precision="auto")
    result = ConceptTrainer(llava_engine, "bo", cfg, progress=False).fit(samples)
    assert result.concept.meta["metrics"]["precision"] == "fp32"
    assert result.concept.meta["recipe"]["precision"] == "auto"  # the setting as asked, beside what it resolved to
    with pytest.raises(ValueError, match="cannot train in 'bf16'"):
        ConceptTrainer(llava_engine, "bo", TrainConfig(**{**cfg.__dict__, "precision": "bf16"}), progress=False).fit(samples)


def test_visual_init_starts_the_latents_from_the_training_photos_own_visual_tokens(llava_engine: YoLLaVA, tmp_path):
    from yollava.concepts.concept import visual_latents

    samples = recognition_samples(tmp_path, n_pos=3, n_neg=6)
    positives = [s.image for s in samples if s.is_positive]
    features = [llava_engine.encode_image(p).features for p in positives]
    n, hidden = features[0].shape
    pooled = visual_latents(features, 4, "pooled")
    assert pooled.shape == (4, hidden)
    # pooling n tokens down to 1 is each photo's mean; the photos' mean of that is "global" averaged over photos
    assert torch.allclose(visual_latents(features, 1, "pooled")[0], torch.stack([f.float().mean(0) for f in features]).mean(0), atol=1e-5)
    glob = visual_latents(features, 4, "global")
    assert torch.allclose(glob[0], features[0].float().mean(0), atol=1e-5) and torch.allclose(glob[3], glob[0])  # photos take turns
    assert torch.allclose(visual_latents(features, 4, "first"), visual_latents(features[:1], 4, "pooled"))
    with pytest.raises(ValueError, match="at least one photo"):
        visual_latents([], 4)
    with pytest.raises(ValueError, match="unknown visual initialisation"):
        visual_latents(features, 4, "median")
    with pytest.raises(ValueError, match="init must be"):
        TrainConfig(init="pixels")

    # the trainer starts a new concept from the positives' visual tokens (plus the seeded noise every init has)
    real, seen = llava_engine.new_concept, {}

    def spy(*args, **kwargs):
        seen["concept"] = real(*args, **kwargs)
        seen["start"], seen["photos"] = seen["concept"].input_rows.detach().float().clone(), kwargs["photos"]
        return seen["concept"]

    llava_engine.new_concept = spy
    try:
        cfg = TrainConfig(k=4, epochs=1, lr=1e-3, batch_size=4, seed=0, holdout_fraction=0.0, select_best_epoch=False, init="visual-global")
        ConceptTrainer(llava_engine, "bo", cfg, progress=False).fit(samples)
    finally:
        llava_engine.new_concept = real
    assert sorted(seen["photos"]) == sorted(positives)
    expected = visual_latents([llava_engine.encode_image(p).features for p in seen["photos"]], 4, "global")
    plain = llava_engine.new_concept("plain", 4, seed=0).input_rows.detach().float()
    noise = (plain[1:] - llava_engine.adapter.embed_tokens.weight.float().mean(0)).abs().max()
    assert (seen["start"][1:] - expected).abs().max() <= noise + 1e-6  # the visual tokens + the same seeded noise
    assert (plain[1:] - expected).abs().max() > 3 * noise  # not where the plain initialisation starts


def test_repeat_captions_balances_caption_samples_like_positives(tmp_path):
    samples = [Sample(QUESTION, "Yes", f"p{i}.jpg", "positive") for i in range(2)]
    samples += [Sample(QUESTION, "No", f"n{i}.jpg", "negative") for i in range(8)]
    samples += [Sample("Describe this photo.", "<bo> is a dog.", "p0.jpg", "caption")]
    once = TrainConfig(holdout_fraction=0.0)
    epoch, _ = trainer_module.epoch_samples(samples, once)
    assert sum(s.kind == "caption" for s in epoch) == 1 and sum(s.is_positive for s in epoch) == 8  # positives 4x
    epoch, _ = trainer_module.epoch_samples(samples, TrainConfig(holdout_fraction=0.0, repeat_captions=True))
    assert sum(s.kind == "caption" for s in epoch) == 4 and sum(s.is_positive for s in epoch) == 8
    epoch, weights = trainer_module.epoch_samples(samples, TrainConfig(holdout_fraction=0.0, repeat_captions=True, balance_by="weight"))
    assert [w for s, w in zip(epoch, weights) if s.kind == "caption"] == [4.0]
