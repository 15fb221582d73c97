"""pocket v2's training pieces on a tiny pocket (random Qwen2 LLM of width 32, identity vision): the LoRA on the bf16
copy starts as the frozen model, trains only itself and ships exactly (merged into fp32); samples with two photos go
through the engine's loss; the v2 sample mix is balanced and never mixes splits; views are what they claim; a concept
trained on v1 refused by v2 names the commands that help."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yollava.models.pocket.adapter import load_pocket, merge_lora, save_pocket_weights
from yollava.pocket_training.describe import first_sentence
from yollava.pocket_training.lora import LoraLinear, add_lora, lora_tensors
from yollava.pocket_training.samples import SAME_QUESTIONS, Sample, v2_samples
from yollava.pocket_training.v2 import PocketLossV2
from yollava.pocket_training.views import augment, collage, paste

from .test_pocket_training import fake_feats, tiny_llm, tiny_pocket, use_tiny_llm  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def _decoder_logits(adapter, decoder, head, ids):
    from yollava.models.hf_common import decoder_forward

    hidden, _ = decoder_forward(decoder, adapter.embed_tokens(ids), None, None, None, False)
    return head(hidden)


def _randomise(wrapped, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at 0 (a no-op): give it a real update, exactly representable in fp16
        for lora in wrapped.values():
            lora.A.copy_((0.3 * torch.randn(lora.A.shape, generator=g)).half().float())
            lora.B.copy_((0.3 * torch.randn(lora.B.shape, generator=g)).half().float())


def test_lora_starts_as_the_model_and_ships_merged_into_fp32_exactly(tiny_llm, tmp_path, use_tiny_llm):
    a = tiny_pocket(tiny_llm)
    ids = torch.tensor([a.tokenizer("What colour is the dog?", add_special_tokens=False)["input_ids"]])
    llm = a.model.llm
    base = _decoder_logits(a, llm.model, llm.lm_head, ids)
    decoder = copy.deepcopy(llm.model)
    wrapped = add_lora(decoder, rank=4, alpha=8)
    assert len(wrapped) == 7 * 2  # every Linear of 2 layers
    assert torch.equal(_decoder_logits(a, decoder, llm.lm_head, ids), base)  # B = 0: exactly the frozen model
    _randomise(wrapped)
    expected = _decoder_logits(a, decoder, llm.lm_head, ids)
    assert (expected - base).abs().max() > 0.1
    # shipped: saved in fp16 with the projector, merged into a fresh fp32 LLM by load_pocket
    save_pocket_weights(tmp_path, a.model.projector.state_dict(), lora_tensors(wrapped),
                        {"stage": "v2", "version": 2, "grid": 1, "lora": {"r": 4, "alpha": 8}})
    shipped = load_pocket(weights_dir=tmp_path, progress=False)
    assert torch.allclose(_decoder_logits(shipped, shipped.model.llm.model, shipped.model.llm.lm_head, ids), expected, atol=1e-4)
    assert shipped.fingerprint()["pocket_version"] == 2
    wrong = copy.deepcopy(llm)
    with pytest.raises(AttributeError):  # names without the LLM's "model." prefix do not exist in it: caught, not ignored
        merge_lora(wrong, lora_tensors(wrapped, prefix=""), 2.0)


def test_lora_on_the_bf16_copy_trains_only_itself_and_matches_fp32(tiny_llm):
    a = tiny_pocket(tiny_llm)
    before = {k: v.clone() for k, v in a.model.llm.state_dict().items()}
    decoder, head = a.bf16_copy()
    wrapped = add_lora(decoder, rank=4, alpha=8)
    assert all(isinstance(m, LoraLinear) for m in wrapped.values())
    _randomise(wrapped)
    fp32 = copy.deepcopy(a.model.llm.model)
    fp32_wrapped = add_lora(fp32, rank=4, alpha=8)
    with torch.no_grad():
        for k, m in fp32_wrapped.items():
            m.A.copy_(wrapped[k].A)
            m.B.copy_(wrapped[k].B)
    ids = torch.tensor([a.tokenizer("Is there a dog in this photo?", add_special_tokens=False)["input_ids"]])
    bf16 = _decoder_logits(a, decoder, head, ids)
    ref = _decoder_logits(a, fp32, a.model.llm.lm_head, ids)
    assert (bf16 - ref).abs().max() < 0.05 * ref.abs().max()
    bf16.sum().backward()
    assert all(m.A.grad is not None and m.B.grad.abs().sum() > 0 for m in wrapped.values())
    assert all(p.grad is None for p in a.model.llm.parameters())
    assert all(torch.equal(v, before[k]) for k, v in a.model.llm.state_dict().items())


def test_two_photo_samples_go_through_the_engines_loss_with_their_own_tokens(tiny_llm):
    a = tiny_pocket(tiny_llm)
    table = torch.randn(4, 2, 12)
    loss_fn = PocketLossV2(a, table, precision=None)
    for p in a.model.projector.parameters():
        p.requires_grad_(True)
    two = Sample((1, 2), SAME_QUESTIONS[0], "Yes", "same_yes")
    one, none = Sample(3, "What is this?", "A dog.", "x"), Sample((), "Describe a dog.", "A dog barks.", "text_only")
    enc = loss_fn.encode([two, one, none], loss_fn.visual_tokens([two, one, none]))
    slots = [e.input_ids.count(a.image_token_id) for e in enc]
    assert slots == [2 * 2, 2, 0]  # grid 1: 2 tokens per photo
    swapped = Sample((2, 1), SAME_QUESTIONS[0], "Yes", "same_yes")
    assert not torch.allclose(loss_fn([two]), loss_fn([swapped]))  # photo order reaches the model
    loss = loss_fn([two, one, none])
    loss.backward()
    assert torch.isfinite(loss) and a.model.projector[0].weight.grad.abs().sum() > 0


def fake_views(feats: dict) -> dict:
    photos = feats["photos"]
    plan, rows = [], []
    for split in ("train", "heldout_seen"):
        idx = [i for i, p in enumerate(photos) if p.split == split]
        for i in idx[:4]:
            plan.append({"kind": "pair", "split": split, "photo": i, "other": idx[(idx.index(i) + 1) % len(idx)]})
            rows += [{"item": len(plan) - 1, "role": r} for r in ("view0", "view1", "other")]
        plan.append({"kind": "collage", "split": split, "left": idx[0], "right": idx[-1]})
        rows.append({"item": len(plan) - 1, "role": "collage"})
    return {"pooled": torch.randn(len(rows), 2, 12), "plan": plan, "rows": rows,
            "row_of": {(r["item"], r["role"]): k for k, r in enumerate(rows)}}


def test_v2_samples_are_balanced_and_use_only_their_split():
    feats = fake_feats(3)
    for p in feats["photos"][::4]:
        p.split = "heldout_seen"
    views = fake_views(feats)
    offset = len(feats["photos"])
    held = {offset + k for k, r in enumerate(views["rows"]) if views["plan"][r["item"]]["split"] != "train"}
    held |= {i for i, p in enumerate(feats["photos"]) if p.split != "train"}
    descriptions = {p.name: f"A {p.name} is a thing." for p in feats["photos"]}
    samples = v2_samples(feats, views, descriptions, 400, random.Random(0))
    kinds = {s.kind for s in samples}
    assert {"same_yes", "same_no", "where", "describe", "text_only"} <= kinds
    assert not any(set(s.rows) & held for s in samples)
    same = [s for s in samples if s.kind.startswith("same_")]
    yes = sum(s.answer == "Yes" for s in same)
    assert 0.35 < yes / len(same) < 0.65 and all(len(s.rows) == 2 for s in same)
    for s in samples:
        if s.kind == "where":
            item = views["plan"][views["rows"][s.rows[0] - offset]["item"]]
            assert feats["photos"][item[s.answer.lower()]].name in s.question
        if s.kind == "text_only":
            assert s.rows == ()


def _solid(colour, size=(300, 200)):
    return Image.new("RGB", size, colour)


def test_views_are_squares_and_collages_put_each_photo_on_its_side():
    rng = random.Random(0)
    assert augment(_solid("red"), rng).size == (224, 224)
    pasted = np.asarray(paste(_solid("red"), _solid("blue"), rng))
    red = (pasted[..., 0] > 200) & (pasted[..., 2] < 50)
    assert 0.45**2 - 0.01 < red.mean() < 0.75**2 + 0.01  # the photo takes 45-75 % of the side
    c = np.asarray(collage(_solid("red"), _solid("blue")))
    assert (c[:, :112, 0] > 200).all() and (c[:, 112:, 2] > 200).all()


def test_descriptions_keep_one_plain_sentence():
    assert first_sentence("A dalmatian is a dog with black spots. It is friendly.") == "A dalmatian is a dog with black spots."
    assert first_sentence("I'm sorry, I cannot describe that.") is None
    assert first_sentence("word " * 100 + ".") is None
    assert first_sentence("") is None


def test_a_v1_concept_on_v2_names_the_model_to_use_and_the_command_to_retrain(tiny_llm, tmp_path):
    from yollava.concepts import load_concept
    from yollava import YoLLaVA
    from yollava.errors import ConceptMismatchError

    v1 = tiny_pocket(tiny_llm)
    engine = YoLLaVA(v1, tmp_path)
    engine.new_concept("bo", k=2)
    engine.save_concept("bo")
    meta = json.loads((tmp_path / "bo.json").read_text())
    del meta["base_model"]["pocket_version"]  # as concept files written before v2 are
    (tmp_path / "bo.json").write_text(json.dumps(meta))
    v2 = tiny_pocket(tiny_llm)
    v2.model.config.version = 2
    with torch.no_grad():
        v2.model.projector[2].weight.add_(0.1)
    with pytest.raises(ConceptMismatchError) as e:
        load_concept(tmp_path, "bo", v2.fingerprint())
    assert "pocket v1" in str(e.value) and "--model pocket-v1" in str(e.value)
    assert "yollava personalize bo" in str(e.value)
    assert load_concept(tmp_path, "bo", v1.fingerprint()).name == "bo"  # on v1 itself it loads
