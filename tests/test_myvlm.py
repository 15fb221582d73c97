"""Recipe ``myvlm``: MyVLM's method. The concept head is the toggle; the concept's latents follow a photo's visual
tokens only when the head finds the subject there; captions that name the subject teach it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from yollava import who as W
from yollava.concepts import Concept, load_concept, validate_meta
from yollava.engine import Engine
from yollava.errors import CorruptConceptError
from yollava.models import load_model
from yollava.recipes import get_recipe

from .test_who import engine, world  # noqa: F401  (engine, world: test_who's fixtures: a tiny model, its palette world)

pytestmark = pytest.mark.usefixtures("one_thread", "private_dirs")


def _ids(engine, tokens):
    return [engine.bank.token_id(t) for t in tokens]


def test_vision_latents_follow_the_photo_only_when_it_is_there(tiny_model_dirs, world, tmp_path):
    seen = []
    gate_answer: list[str] = []

    def gate(concepts, image):
        seen.append(([c.name for c in concepts], image))
        return list(gate_answer)

    engine = Engine(load_model(str(tiny_model_dirs["llava"])), tmp_path, photo_gate=gate)
    red = engine.new_concept("red", 2, injection="vision")
    engine.new_concept("bo", 2)  # Yo'LLaVA-style, for contrast
    latents = _ids(engine, red.tokens[1:])
    ident = engine.bank.token_id(red.identifier)

    gate_answer[:] = ["red"]
    msg = engine.user_message("Describe this photo.", has_image=True, in_photo=["red"])
    assert msg.content.startswith("<red_1><red_2> ") and "<red> is" not in msg.content
    enc = engine.encode("Describe this photo.", image=world["subjects"]["red"][0])
    ids = list(enc.input_ids)
    start = ids.index(latents[0])
    assert ids[start:start + 2] == latents
    image_end = max(i for i, t in enumerate(ids) if t == engine.adapter.image_token_id)
    assert 0 < start - image_end <= 2  # straight after the photo's visual tokens (past the template's newline)
    assert seen and seen[-1][0] == ["red"]  # every loaded vision concept was asked about, unnamed or not

    gate_answer[:] = []
    assert not set(latents) & set(engine.encode("Describe this photo.", image=world["subjects"]["blue"][0]).input_ids)
    # named in the question but not in the photo: the identifier is there, its latents are not
    ids = list(engine.encode("What is <red> doing?", image=world["subjects"]["blue"][0]).input_ids)
    assert ident in ids and not set(latents) & set(ids)
    # what training knows beats the gate; text-only prompts never get them
    assert set(latents) <= set(engine.encode("Describe this photo.", image=world["subjects"]["blue"][0], in_photo=["red"]).input_ids)
    assert not set(latents) & set(engine.encode("What is <red>?").input_ids)
    # a Yo'LLaVA-style concept is introduced in text as before
    assert "<bo> is <bo_1><bo_2>." in engine.user_message("Is <bo> here?", has_image=True).content


def test_the_concept_head_is_the_gate_of_yollava(engine, world):
    sig = W.fit_signature(world["subjects"]["red"][:4], W.embedder_for(engine), world["pool"], seed=0)
    c = Concept.initialise("red", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=1)
    c.meta["injection"] = "vision"
    engine.add_concept(W.attach_signature(c, sig))
    assert engine.concepts_in_photo(world["subjects"]["red"][5]) == ["red"]
    assert engine.concepts_in_photo(world["subjects"]["blue"][0]) == []
    # its yes/no is decided at the head's threshold, not at the language model's unused one
    sig.head.threshold = 0.37
    c = W.attach_signature(c, sig)
    assert W.decision_threshold(c) == pytest.approx(0.37) and c.threshold == 0.5
    assert W.head_scores(sig, W.embedder_for(engine), world["subjects"]["red"][5:6])[0] >= 0.37
    prompt_style = Concept.initialise("p", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=1)
    prompt_style.meta["recognition_threshold"] = 0.61
    assert W.decision_threshold(W.attach_signature(prompt_style, sig)) == pytest.approx(0.61)
    # without a head it is never taken to be present
    bare = Concept.initialise("green", engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=1)
    bare.meta["injection"] = "vision"
    engine.add_concept(bare)
    assert W.heads_in_photo(engine, [bare], world["subjects"]["red"][5]) == []
    assert engine.concepts_in_photo(world["subjects"]["red"][5]) == ["red"]
    # another request's bank keeps the gate
    assert engine.with_bank().photo_gate is engine.photo_gate


def test_injection_is_validated_in_concept_files():
    with pytest.raises(CorruptConceptError, match="injection"):
        validate_meta({"injection": "everywhere"}, "red")
    assert validate_meta({"injection": "vision"}, "red")["injection"] == "vision"


def test_myvlm_recipe_trains_a_concept_that_the_head_toggles(engine, world, monkeypatch):
    recipe = get_recipe("myvlm")
    train = replace(recipe.train, epochs=1)
    data = replace(recipe.data, conversation_tokens=8)
    before = {k: v.clone() for k, v in engine.adapter.model.state_dict().items()}
    calls = []
    real_encode = Engine.encode

    def spy(self, question, image=None, answer=None, concepts=(), in_photo=None):
        if answer is not None:
            calls.append((question, answer, in_photo))
        return real_encode(self, question, image, answer, concepts, in_photo)

    monkeypatch.setattr(Engine, "encode", spy)
    result = engine.personalize("red", world["subjects"]["red"][:4], recipe="myvlm", train=train, data=data, pool=world["pool"], progress=False)
    monkeypatch.undo()

    c = result.concept
    assert c.injection == "vision" and c.k == 1
    assert all(torch.equal(before[k], v) for k, v in engine.adapter.model.state_dict().items())
    counts = c.meta["counts"]
    assert counts["caption"] == 4 and counts["other_caption"] == 12 and counts["negative"] == counts["hard_negative"] == 0
    # the subject's photos are trained with its latents, the pool's captions without (what the head would say)
    assert {tuple(x[2]) for x in calls if "<red>" in x[1]} == {("red",)}
    assert any(x[2] == [] for x in calls) and all(x[2] == [] for x in calls if "<red>" not in x[1])
    sig = W.VisualSignature.from_concept(c)
    assert sig is not None and sig.head.info["kind"] == "logistic"  # MyVLM's toggle learned from negatives
    engine.unload_concept("red")
    loaded = load_concept(engine.concepts_dir, "red", engine.fingerprint())
    assert loaded.injection == "vision" and loaded.meta["recipe"]["name"] == "myvlm-modified"  # one epoch here
    engine.add_concept(loaded)
    assert engine.concepts_in_photo(world["subjects"]["red"][5]) == ["red"] and engine.concepts_in_photo(world["subjects"]["blue"][0]) == []
    assert engine.recognize("red", world["subjects"]["red"][5]).mode == "head"  # MyVLM recognises with its head
    assert engine.recognize("red", world["subjects"]["red"][5], mode="yollava").mode == "head"  # whatever mode is asked for


def test_myvlm_is_an_evaluation_method():
    from yollava.eval import make_method

    m = make_method("myvlm")
    assert m.recipe_name(None) == "myvlm" and m.data_config(None, type("S", (), {"category": "object"})()).caption_negatives == 12
