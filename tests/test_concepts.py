"""Concept rows, concept files, and the promise that the base model is untouched."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from yollava.concepts import Concept, load_concept, save_concept, validate_name
from yollava import YoLLaVA
from yollava.errors import (
    ConceptMismatchError,
    CorruptConceptError,
    InvalidConceptNameError,
    UnknownConceptError,
)
from yollava.models import load_model


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_prompt_without_concepts_gives_base_logits_exactly(engine: YoLLaVA):
    img = Image.new("RGB", (40, 40), (10, 200, 30))
    plain = engine.encode("What colour is this?", image=img)
    base_hidden, _, _ = engine.hidden_states([plain])
    base_logits = engine.adapter.lm_head(base_hidden)

    engine.new_concept("bo", k=4)
    engine.new_concept("anna", k=3, seed=1)
    again = engine.encode("What colour is this?", image=img)
    assert again.input_ids == plain.input_ids
    hidden, _, _ = engine.hidden_states([again])
    logits = engine.bank.logits(hidden, engine.adapter.lm_head)
    vocab = engine.adapter.vocab_size
    assert torch.equal(logits[..., :vocab], base_logits)
    # one column per concept token; latent columns can never be generated
    assert logits.shape[-1] == vocab + 5 + 4
    assert torch.isinf(logits[..., vocab + 1 : vocab + 5]).all()


def test_our_forward_matches_the_transformers_forward(engine: YoLLaVA):
    """Our embed -> splice photo -> decoder -> lm_head path is the family's own computation."""
    img = Image.new("RGB", (40, 40), (120, 20, 220))
    enc = engine.encode("Describe the photo.", image=img)
    hidden, ids, _ = engine.hidden_states([enc])
    ours = engine.adapter.lm_head(hidden)
    a = engine.adapter
    pixels = a.processor.image_processor([img], return_tensors="pt")
    kwargs = {"pixel_values": pixels["pixel_values"]}
    if a.family == "qwen2_vl":
        kwargs |= {"image_grid_thw": pixels["image_grid_thw"], "mm_token_type_ids": (ids == a.image_token_id).int()}
    with torch.no_grad():
        theirs = a.model(input_ids=ids, **kwargs).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_gradients_reach_only_concept_rows(engine: YoLLaVA):
    concept = engine.new_concept("bo", k=4)
    for p in concept.parameters():
        p.requires_grad_(True)
    img = Image.new("RGB", (40, 40), (200, 0, 0))
    batch = [engine.encode("Is <bo> here?", image=img, answer="Yes, <bo> is here."), engine.encode("What is <bo>?", answer="A dog.")]
    engine.loss(batch).backward()
    assert concept.input_rows.grad is not None and concept.input_rows.grad.abs().sum(1).gt(0).all()
    assert concept.output_row.grad is not None and concept.output_row.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in engine.adapter.model.parameters())


def test_save_load_round_trip_is_bit_exact(engine: YoLLaVA, tmp_path):
    c = engine.new_concept("bo", k=4, seed=3)
    c.meta["note"] = "hello"
    engine.save_concept("bo", tmp_path)
    loaded = load_concept(tmp_path, "bo", engine.fingerprint())
    assert torch.equal(loaded.input_rows, c.input_rows) and torch.equal(loaded.output_row, c.output_row)
    assert loaded.meta["note"] == "hello" and loaded.meta["k"] == 4
    meta = json.loads((tmp_path / "bo.json").read_text())
    assert meta["base_model"]["family"] == engine.adapter.family
    # and through the engine: unload, load from the folder by name
    engine.unload_concept("bo")
    engine.concepts_dir = tmp_path
    again = engine.load_concept("bo")
    assert torch.equal(again.input_rows, c.input_rows)


def test_concept_for_another_base_model_is_refused(tiny_model_dirs, tmp_path):
    a = YoLLaVA(load_model(str(tiny_model_dirs["llava"])), tmp_path)
    b = YoLLaVA(load_model(str(tiny_model_dirs["llava_other"])), tmp_path)  # same shapes, other weights
    a.new_concept("bo", k=2)
    a.save_concept("bo")
    with pytest.raises(ConceptMismatchError) as e:
        b.load_concept("bo")
    msg = str(e.value)
    assert str(tiny_model_dirs["llava"]) in msg and str(tiny_model_dirs["llava_other"]) in msg


def test_two_concepts_in_one_prompt(engine: YoLLaVA):
    bo, anna = engine.new_concept("bo", k=2), engine.new_concept("anna", k=3, seed=1)
    enc = engine.encode("Are <bo> and <anna> friends?")
    ids = enc.input_ids
    assert engine.bank.token_id("<bo>") in ids and engine.bank.token_id("<anna>") in ids
    assert engine.bank.token_id("<anna_3>") in ids  # both introductions are in the prompt
    embeds = engine.bank.embed(torch.tensor([ids]), engine.adapter.embed_tokens)[0]
    assert torch.equal(embeds[ids.index(engine.bank.token_id("<bo>"))], bo.input_rows[0])
    assert torch.equal(embeds[ids.index(engine.bank.token_id("<anna_2>"))], anna.input_rows[2])
    assert isinstance(engine.chat("Are <bo> and <anna> friends?", max_new_tokens=4), str)
    engine.unload_concept("bo")
    with pytest.raises(UnknownConceptError, match="<bo>"):
        engine.encode("Where is <bo>?")
    assert engine.bank.token_id("<anna>") == engine.adapter.vocab_size  # ids re-packed after unload


@pytest.mark.parametrize("bad", ["../x", "my dog", "", "a/b", "x" * 65, "<bo>", "bo_1", "bo.json"])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(InvalidConceptNameError):
        validate_name(bad)


def test_name_that_is_an_existing_token_is_refused(llava_engine: YoLLaVA):
    with pytest.raises(InvalidConceptNameError, match="existing token"):
        llava_engine.new_concept("image", k=2)  # <image> is the model's photo placeholder
    with pytest.raises(InvalidConceptNameError, match="existing token"):
        llava_engine.new_concept("s", k=2)  # <s> is BOS


def test_unknown_concept_in_prompt(llava_engine: YoLLaVA):
    llava_engine.new_concept("bo", k=2)
    with pytest.raises(UnknownConceptError) as e:
        llava_engine.chat("Is <rex> a dog?")
    assert "<rex>" in str(e.value) and "<bo>" in str(e.value)


def test_interrupted_save_leaves_previous_version_intact(llava_engine: YoLLaVA, tmp_path, monkeypatch):
    c = llava_engine.new_concept("bo", k=2)
    llava_engine.save_concept("bo", tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        c.input_rows.add_(1.0)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        llava_engine.save_concept("bo", tmp_path)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temp file left, old files untouched
    load_concept(tmp_path, "bo", llava_engine.fingerprint())


def test_first_save_interrupted_leaves_nothing(llava_engine: YoLLaVA, tmp_path, monkeypatch):
    llava_engine.new_concept("bo", k=2)
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        llava_engine.save_concept("bo", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tampered_concept_file_is_detected(llava_engine: YoLLaVA, tmp_path):
    llava_engine.new_concept("bo", k=2)
    llava_engine.save_concept("bo", tmp_path)
    data = bytearray((tmp_path / "bo.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "bo.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptConceptError, match="hash"):
        load_concept(tmp_path, "bo", llava_engine.fingerprint())


def test_tied_embeddings_keep_a_separate_concept_output_row(tiny_model_dirs, tmp_path):
    eng = YoLLaVA(load_model(str(tiny_model_dirs["llava_tied"])), tmp_path)
    assert eng.adapter.lm_head.weight.data_ptr() == eng.adapter.embed_tokens.weight.data_ptr()
    c = eng.new_concept("bo", k=2)
    assert c.output_row.data_ptr() != c.input_rows.data_ptr()
    with torch.no_grad():
        c.output_row.add_(1.0)  # moving the output row must not move <bo>'s input row
    assert not torch.equal(c.output_row, c.input_rows[0])


def test_concept_shape_checks():
    with pytest.raises(ValueError):
        Concept("bo", torch.zeros(3, 8), torch.zeros(4))
    c = Concept("bo", torch.zeros(3, 8), torch.zeros(8))
    assert c.k == 2 and c.tokens == ["<bo>", "<bo_1>", "<bo_2>"]
    assert c.system_prefix == "<bo> is <bo_1><bo_2>."


def test_save_concept_rejects_unknown_and_bad_meta(tmp_path):
    c = Concept("bo", torch.zeros(3, 8), torch.zeros(8))
    save_concept(c, tmp_path, {"family": "x"})
    (tmp_path / "bo.json").write_text("{not json")
    with pytest.raises(CorruptConceptError):
        load_concept(tmp_path, "bo")
    with pytest.raises(UnknownConceptError):
        load_concept(tmp_path, "nobody")


def test_prefix_cache_gives_the_same_loss_and_gradients(llava_engine: YoLLaVA):
    concept = llava_engine.new_concept("bo", k=3)
    concept.requires_grad_(True)
    imgs = [Image.new("RGB", (40, 40), c) for c in [(200, 0, 0), (0, 0, 200)]]
    batch = [llava_engine.encode("Is <bo> here?", image=im, answer=a) for im, a in zip(imgs, ["Yes, <bo> is here.", "No."])]
    assert batch[0].prefix_len == batch[1].prefix_len > 0
    full = llava_engine.loss(batch)
    full.backward()
    grads = (concept.input_rows.grad.clone(), concept.output_row.grad.clone())
    concept.zero_grad()
    cache: dict = {}
    cached = llava_engine.loss(batch, cache)
    cached.backward()
    assert len(cache) == 2  # one entry per distinct photo prefix
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(concept.input_rows.grad, grads[0], rtol=1e-3, atol=1e-4)  # fp32 summation order
    torch.testing.assert_close(concept.output_row.grad, grads[1], rtol=1e-3, atol=1e-4)
    again = llava_engine.loss(batch, cache)  # reuse: no new entries, same value
    assert len(cache) == 2 and torch.allclose(again, full, atol=1e-6)


def test_weighted_loss_equals_the_batch_with_the_item_repeated(llava_engine: YoLLaVA):
    """A positive weighted 3x gives the loss and gradients of the batch with it repeated 3 times
    (the trainer's ``balance_by="weight"``); wrong weights fail clearly."""
    concept = llava_engine.new_concept("bo", k=3)
    concept.requires_grad_(True)
    imgs = [Image.new("RGB", (40, 40), c) for c in [(200, 0, 0), (0, 0, 200)]]
    pos = llava_engine.encode("Is <bo> here?", image=imgs[0], answer="Yes, <bo> is here.")
    neg = llava_engine.encode("Is <bo> here?", image=imgs[1], answer="No.")
    repeated = llava_engine.loss([pos, pos, pos, neg])
    repeated.backward()
    grads = concept.input_rows.grad.clone()
    concept.zero_grad()
    weighted = llava_engine.loss([pos, neg], weights=[3.0, 1.0])
    weighted.backward()
    torch.testing.assert_close(weighted, repeated, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(concept.input_rows.grad, grads, rtol=1e-3, atol=1e-5)
    plain = llava_engine.loss([pos, neg])
    assert not torch.allclose(plain, weighted, atol=1e-4)  # the weight is not a no-op
    with pytest.raises(ValueError, match="one per item"):
        llava_engine.loss([pos, neg], weights=[1.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        llava_engine.loss([pos, neg], weights=[float("nan"), 1.0])
