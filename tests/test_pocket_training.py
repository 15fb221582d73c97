"""``yollava.pocket_training`` on a tiny pocket (random Qwen2 LLM of width 32, identity vision): the loss
is the engine's and equals the scripts' old prefix-cached one, both stages train and save into the folder
named, never into the package, and the shipped LoRA merge gives the logits of base + LoRA."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yollava.models.hf_common import decoder_forward
from yollava.models import Message
from yollava.models.pocket import adapter as pocket_adapter
from yollava.models.pocket.adapter import PocketAdapter, load_pocket, merge_lora, save_pocket_weights
from yollava.models.pocket.model import PocketConfig, PocketVLM
from yollava.pocket_training import PocketLoss, Sample, add_lora, lora_state, train, train_stage1, train_stage2
from yollava.pocket_training.data import CATEGORIES, Photo
from yollava.models.tiny import byte_level_tokenizer

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]
VISION_DIM, HIDDEN = 12, 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_llm():
    """A random Qwen2 LLM and a tokenizer with the pocket's special tokens: what ``load_llm`` returns."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = byte_level_tokenizer(SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=False, initializer_range=0.2)
    return Qwen2ForCausalLM(cfg).eval(), tok


def tiny_pocket(tiny_llm) -> PocketAdapter:
    llm, tok = tiny_llm
    config = PocketConfig(vision_dim=VISION_DIM, hidden_size=HIDDEN, grid=1, llm="tiny")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PocketVLM(copy.deepcopy(llm), config, vision=torch.nn.Identity())
    return PocketAdapter(model, tok, model_id="tiny-pocket")


@pytest.fixture
def use_tiny_llm(tiny_llm, monkeypatch):
    """``load_pocket`` builds the tiny pocket (same shapes, a fresh copy of the LLM each time)."""
    monkeypatch.setattr(pocket_adapter, "load_llm", lambda progress=True: (copy.deepcopy(tiny_llm[0]), tiny_llm[1]))
    monkeypatch.setattr(pocket_adapter, "PocketConfig", lambda **kw: PocketConfig(vision_dim=VISION_DIM, hidden_size=HIDDEN, llm="tiny", **{"grid": 1, **kw}))
    monkeypatch.setattr(pocket_adapter, "PocketVLM", lambda llm, config: PocketVLM(llm, config, vision=torch.nn.Identity()))


def fake_feats(n_per_class: int = 2) -> dict:
    """Photos of a few named classes covering every category (what ``load_features`` returns, made up)."""
    classes = [("dog", "imagenet", ("animal", "dog")), ("bird", "imagenet", ("animal", "bird")), ("fish", "imagenet", ("animal", "fish")),
               ("ant", "caltech101", ("animal", "insect")), ("pizza", "imagenet", ("food",)), ("face", "caltech101", ("person",)),
               ("car", "caltech101", ()), ("chair", "imagenet", ()), ("cat", "imagenet", ("animal",))]
    photos = [Photo(Path(f"/pool/{n}/{i}.jpg"), src, n, cats, "train") for n, src, cats in classes for i in range(n_per_class)]
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(len(classes), VISION_DIM, generator=g)
    pooled = torch.stack([centres[i // n_per_class] + 0.1 * torch.randn(VISION_DIM, generator=g) for i in range(len(photos))])
    colours = np.random.default_rng(0).dirichlet(np.ones(11), len(photos)).astype(np.float32)
    colours[:, 7] += 1.0  # mostly blue: every photo has a main colour
    colours /= colours.sum(1, keepdims=True)
    return {"pooled": pooled[:, None].repeat(1, 2, 1), "colours": colours, "photos": photos}


def scripts_loss(adapter: PocketAdapter, pooled: torch.Tensor, samples: list[Sample]) -> torch.Tensor:
    """What ``scripts/pocket/common.py`` computed before the move: its own collate, the system prompt's keys and
    values computed once without gradient, and the cross-entropy on answer tokens."""
    tok = adapter.tokenizer
    system = adapter.render([Message("user", "x")], add_generation_prompt=False)
    prefix_text = system[: system.index("<|im_start|>user")]
    prefix_ids = tok(prefix_text, add_special_tokens=False)["input_ids"]
    enc = []
    for s in samples:
        rendered = adapter.render([Message("user", s.question, has_image=True)])
        before, after = rendered[len(prefix_text):].split(adapter.image_marker)
        ids = tok(before, add_special_tokens=False)["input_ids"] + adapter.image_token_ids + tok(after, add_special_tokens=False)["input_ids"]
        enc.append((ids + tok(s.answer + adapter.end_of_turn, add_special_tokens=False)["input_ids"], len(ids)))
    width = max(len(r) for r, _ in enc)
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    target = torch.zeros((len(enc), width), dtype=torch.bool)
    for i, (row, start) in enumerate(enc):
        ids[i, : len(row)], mask[i, : len(row)], target[i, start: len(row)] = torch.tensor(row), 1, True
    llm = adapter.model.llm.model
    with torch.no_grad():
        _, cache = decoder_forward(llm, adapter.embed_tokens(torch.tensor([prefix_ids])), None, None, None, True)
        cache.batch_repeat_interleave(ids.shape[0])
    visual = adapter.model.projector(pooled[[s.index for s in samples]].float()).flatten(0, 1)
    emb = adapter.embed_tokens(ids).masked_scatter((ids == adapter.image_token_id).unsqueeze(-1), visual)
    full_mask = torch.cat([torch.ones(ids.shape[0], len(prefix_ids), dtype=mask.dtype), mask], dim=1)
    hidden, _ = decoder_forward(llm, emb, full_mask, None, cache, True)  # (the kv-cache keyword this transformers takes)
    predicts = target[:, 1:]
    return F.cross_entropy(adapter.lm_head(hidden[:, :-1][predicts]).float(), ids[:, 1:][predicts])


SAMPLES = [Sample(0, "What is in this photo?", "A photo of a dog.", "caption"), Sample(5, "Is this food?", "No", "category_no"),
           Sample(8, "What colours are in this photo?", "Mostly blue and red.", "colour")]


def test_loss_is_the_engines_and_equals_the_scripts_prefix_cached_loss(tiny_llm):
    adapter = tiny_pocket(tiny_llm)
    feats = fake_feats()
    ours = PocketLoss(adapter, feats["pooled"])(SAMPLES)
    ref = scripts_loss(adapter, feats["pooled"], SAMPLES)
    assert ours.item() > 0.5 and torch.allclose(ours, ref, atol=1e-5), (ours.item(), ref.item())
    # the gradient reaches the projector (the visual tokens are trained through the frozen LLM)
    proj = adapter.model.projector
    for p in proj.parameters():
        p.requires_grad_(True)
    PocketLoss(adapter, feats["pooled"])(SAMPLES).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    # answer tokens only: a longer question with the same answer changes the loss, a padded batch neighbour does not
    alone = PocketLoss(adapter, feats["pooled"])(SAMPLES[1:2]).item()
    with_neighbour = PocketLoss(adapter, feats["pooled"])([SAMPLES[1], SAMPLES[1]]).item()
    assert alone == pytest.approx(with_neighbour, abs=1e-5)


def test_train_lowers_the_loss_and_changes_only_the_projector(tiny_llm):
    adapter = tiny_pocket(tiny_llm)
    feats = fake_feats()
    food = [Sample(i, "Is this food?", "Yes" if p.name == "pizza" else "No", "category") for i, p in enumerate(feats["photos"])]
    llm_before = {k: v.clone() for k, v in adapter.model.llm.state_dict().items()}
    params = list(adapter.model.projector.parameters())
    for p in params:
        p.requires_grad_(True)
    loss = PocketLoss(adapter, feats["pooled"])
    before = loss(food).item()
    history = train(loss, food, params, lr=3e-2, epochs=5, batch_size=6, seed=0, log=lambda m: None)
    assert len(history) == 15 and loss(food).item() < 0.8 * before, (before, history)  # measured 7.60 -> 5.24
    assert all(torch.equal(v, adapter.model.llm.state_dict()[k]) for k, v in llm_before.items())


def test_stages_write_only_into_the_folder_named_and_load_back(tmp_path, use_tiny_llm):
    feats = fake_feats()
    s1 = train_stage1(feats, tmp_path / "s1", imagenet=4, caltech=2, colour=2, epochs=1, batch_size=4, word_epochs=2)
    assert sorted(p.name for p in s1.iterdir()) == ["loss.json", "pocket.json", "pocket.safetensors", "train.log"]
    meta = json.loads((s1 / "pocket.json").read_text())
    assert meta["stage"] == 1 and meta["training"]["stage0"]["epochs"] == 2 and meta["training"]["stage1"]["samples"] == 8
    s2 = train_stage2(feats, s1, tmp_path / "s2", samples=8, epochs=1, batch_size=4, rank=2, alpha=4)
    meta2 = json.loads((s2 / "pocket.json").read_text())
    assert meta2["stage"] == 2 and meta2["lora"] == {"r": 2, "alpha": 4, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert meta2["training"]["stage1"] == meta["training"]["stage1"] and sum(meta2["training"]["stage2"]["mix"].values()) == 8
    loaded = load_pocket(weights_dir=s2, progress=False)  # the LoRA is merged into the LLM at load time
    assert loaded.model.config.weights_sha256 != load_pocket(weights_dir=s1, progress=False).model.config.weights_sha256
    # never into the package: the shipped weights folder (and the package itself) are refused
    for inside in (pocket_adapter.WEIGHTS_DIR, Path(pocket_adapter.__file__).parents[2]):
        with pytest.raises(ValueError, match="inside the package"):
            train_stage1(feats, inside, imagenet=1, caltech=1, colour=1)


def test_scripts_only_call_the_package():
    scripts = Path(__file__).resolve().parents[1] / "scripts" / "pocket"
    for f in scripts.glob("*.py"):
        text = f.read_text()
        assert "sys.path" not in text and "WEIGHTS_DIR /" not in text and "shutil" not in text, f
        assert "from yollava.pocket_training" in text, f
    assert not (scripts / "common.py").exists()


def _logits(llm, ids):
    with torch.no_grad():
        return llm(input_ids=ids).logits


def test_merge_lora_gives_the_logits_of_base_plus_lora(tiny_llm, tmp_path, use_tiny_llm):
    llm, tok = tiny_llm
    base = copy.deepcopy(llm)
    with_lora = copy.deepcopy(llm)
    add_lora(with_lora, rank=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # PEFT starts B at 0 (a no-op LoRA): give it a real update, exactly representable in fp16
        for n, p in with_lora.named_parameters():
            if "lora_" in n:
                p.copy_((0.3 * torch.randn(p.shape, generator=g)).half().float())
    ids = torch.tensor([tok("What colour is the dog? The dog is brown.", add_special_tokens=False)["input_ids"]])
    expected = _logits(with_lora, ids)
    assert (expected - _logits(base, ids)).abs().max() > 0.1  # the LoRA does change the output
    state = lora_state(with_lora)
    assert len(state) == 2 * 4 * 2  # A and B of q, k, v, o in 2 layers
    merged = copy.deepcopy(base)
    assert merge_lora(merged, state, 8 / 4) == 8
    assert torch.allclose(_logits(merged, ids), expected, atol=1e-4)
    wrong = copy.deepcopy(base)
    merge_lora(wrong, state, 1.0)  # the scale alpha / r matters: a wrong one is caught
    assert not torch.allclose(_logits(wrong, ids), expected, atol=1e-3)
    # the shipping path: saved (fp16) with a projector, loaded by load_pocket, merged into a fresh LLM
    proj = tiny_pocket(tiny_llm).model.projector.state_dict()
    save_pocket_weights(tmp_path, proj, state, {"stage": 2, "grid": 1, "lora": {"r": 4, "alpha": 8, "targets": ["q_proj"]}})
    shipped = load_pocket(weights_dir=tmp_path, progress=False)
    assert torch.allclose(_logits(shipped.model.llm, ids), expected, atol=1e-4)
    assert all(not p.requires_grad for p in shipped.model.parameters())


def test_stage2_samples_are_balanced_and_answerable():
    from yollava.pocket_training import stage2_samples

    feats = fake_feats(3)
    samples = stage2_samples(feats, 200, random.Random(0), n_hard=2)
    photos = feats["photos"]
    for s in samples:
        if s.kind == "presence_yes":
            assert photos[s.index].name in s.question
        elif s.kind == "category_yes":
            cat = next(c for c, (q, _, _) in CATEGORIES.items() if q == s.question)
            assert cat in photos[s.index].categories
        elif s.kind == "category_no":
            cat = next(c for c, (q, _, _) in CATEGORIES.items() if q == s.question)
            assert cat not in photos[s.index].categories
    yes = sum(s.answer == "Yes" for s in samples)
    no = sum(s.answer == "No" for s in samples)
    assert yes > 20 and no > 20 and 0.6 < yes / no < 1.6


def test_a_concept_loads_only_on_the_pocket_weights_it_was_trained_for(tiny_llm, tmp_path):
    from yollava.concepts import load_concept
    from yollava import YoLLaVA
    from yollava.errors import ConceptMismatchError

    a = tiny_pocket(tiny_llm)
    engine = YoLLaVA(a, tmp_path)
    engine.new_concept("bo", k=2)
    engine.save_concept("bo")
    trained_for = a.fingerprint()["pocket_weights_sha256"]
    assert load_concept(tmp_path, "bo", a.fingerprint()).name == "bo"  # the same weights: loads
    b = tiny_pocket(tiny_llm)
    with torch.no_grad():  # one projector value the sampled weights_sha256 never sees (it reads 16 per tensor)
        b.model.projector[2].weight[-1, -1] += 0.5
    fp = b.fingerprint()
    assert {k for k in fp if fp[k] != a.fingerprint()[k]} == {"pocket_weights_sha256"}
    with pytest.raises(ConceptMismatchError) as e:
        load_concept(tmp_path, "bo", fp)
    assert trained_for in str(e.value) and fp["pocket_weights_sha256"] in str(e.value)
    # a concept file made before the hash was recorded still loads on matching weights
    meta = json.loads((tmp_path / "bo.json").read_text())
    del meta["base_model"]["pocket_weights_sha256"]
    (tmp_path / "bo.json").write_text(json.dumps(meta))
    assert load_concept(tmp_path, "bo", a.fingerprint()).name == "bo"
