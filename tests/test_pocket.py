"""The embedded ``pocket`` VLM. Needs the real LLM: the first run in a fresh cache de-quantises the
GGUF (about 80-90 s on 2 cores), later runs load the safetensors cache in seconds."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from yollava import YoLLaVA
from yollava.models import Message
from yollava.models.pocket import PocketAdapter, llm as pocket_llm
from yollava.models.pocket.adapter import WEIGHTS_DIR, load_pocket, save_pocket_weights
from yollava.paths import default_data_root

pytestmark = pytest.mark.slow  # the real pocket model (and, for one test, the shared pool photos)


@pytest.fixture(scope="module")
def adapter() -> PocketAdapter:
    return load_pocket()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    path = default_data_root() / "pool" / "imagenet" / "n02099601_golden_retriever.jpg"
    return Image.open(path).convert("RGB") if path.exists() else Image.new("RGB", (300, 200), (200, 150, 60))


def test_registered():
    from yollava.models import _LOADERS, _import_families

    _import_families()
    assert "pocket" in _LOADERS


def test_loads_from_cache_without_rebuilding(adapter, monkeypatch):
    monkeypatch.setattr(pocket_llm, "build_cache", lambda *a, **k: pytest.fail("cache was rebuilt"))
    llm, tok = pocket_llm.load_llm(progress=False)
    assert llm.lm_head.weight.shape == (151936, 896)
    assert llm.lm_head.weight.data_ptr() != llm.model.embed_tokens.weight.data_ptr()  # untied
    assert torch.equal(llm.model.embed_tokens.weight[:5], adapter.embed_tokens.weight[:5])


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLLAVA_CACHE", str(tmp_path))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pocket_llm, "assemble_gguf", boom)
    with pytest.raises(KeyboardInterrupt):
        pocket_llm.build_cache(progress=False)
    assert list(tmp_path.iterdir()) == []


def test_gguf_checksum_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(pocket_llm, "GGUF_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="checksum"):
        pocket_llm.assemble_gguf(tmp_path / "x.gguf", progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_encode_images(adapter, photo):
    enc = adapter.encode_images([photo, photo.resize((100, 400))])
    assert len(enc) == 2 and enc[0].features.shape == (17, 896)  # v2: 4x4 grid + 1 global
    ids = enc[0].token_ids
    assert len(ids) == 19 and ids.count(adapter.image_token_id) == 17
    assert adapter.tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["<|vision_start|>", "<|vision_end|>"]


def test_render(adapter):
    text = adapter.render([Message("user", "What is this?", has_image=True)])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert f"{adapter.image_marker}\nWhat is this?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert not adapter.render([Message("user", "hi")], add_generation_prompt=False).endswith("assistant\n")
    assert adapter.end_of_turn == "<|im_end|>" and adapter.eos_token_ids == [adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_frozen(adapter):
    assert all(not p.requires_grad for p in adapter.model.parameters())
    assert not adapter.model.training


def test_fingerprint_follows_projector(adapter):
    before = adapter.fingerprint()
    w = adapter.model.projector[0].weight
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert adapter.fingerprint()["pocket_weights_sha256"] != before["pocket_weights_sha256"]
    finally:
        with torch.no_grad():
            w[0, 0] -= 1.0
    assert adapter.fingerprint() == before


def test_weights_roundtrip_and_fingerprint(adapter, tmp_path):
    proj = {k: v * 0.5 for k, v in adapter.model.projector.state_dict().items()}
    save_pocket_weights(tmp_path, proj, None, {"stage": 1, "grid": 3, "lora": None})
    other = load_pocket(weights_dir=tmp_path, progress=False)
    assert torch.allclose(other.model.projector[0].weight, proj["0.weight"].half().float())
    assert other.fingerprint() != adapter.fingerprint()


def test_shipped_weights_are_trained(adapter):
    meta = json.loads((WEIGHTS_DIR / "pocket.json").read_text())
    assert meta["stage"] in (0, 1, 2, "v2") and meta["training"], "shipped weights must record how they were trained"
    assert meta["lora"] is None or meta["lora"]["r"] > 0
    assert (WEIGHTS_DIR / meta["file"]).stat().st_size < 16 * 2**20
    # they see: 20 held-out pool photos (never trained on) of 20 seen classes whose names start with distinct tokens
    from yollava.images import load_image
    from yollava.models import EncodedImage
    from yollava.models.pocket.model import Projector
    from yollava.pocket_training import list_pool
    from yollava.pocket_training.data import cap
    from yollava.pocket_training.evaluate import NAME_Q

    if not (default_data_root() / "pool" / "caltech101").is_dir():
        pytest.skip("needs the shared pool photos")
    tok, emb = adapter.tokenizer, adapter.embed_tokens.weight
    held = {}
    for p in list_pool():
        if p.split == "heldout_seen" and p.name:
            held.setdefault(p.name, p)
    first: dict[str, int] = {}
    for n in sorted(held):
        f = tok(cap(n), add_special_tokens=False)["input_ids"][0]
        if f not in first.values():
            first[n] = f
    names = list(first)[::2][:20]
    pooled = adapter.model.pooled_features([load_image(held[n].path) for n in names])
    words = F.normalize(torch.stack([emb[tok(" " + n, add_special_tokens=False)["input_ids"]].mean(0) for n in names]), dim=-1)
    engine = YoLLaVA(adapter)

    @torch.no_grad()
    def naming(projector, llm: bool = True) -> tuple[float, float | None]:
        """20-way top-1 (chance 0.05): the global visual token nearest the class name's word embedding (what stage 0
        and v2's stage A train), and the LLM's first answer token to "What is in this photo? Answer with a single word
        or phrase."."""
        vis = projector(pooled)
        truth = torch.arange(len(names))
        near = (F.normalize(vis[:, -1], dim=-1) @ words.T).argmax(1)
        if not llm:
            return (near == truth).float().mean().item(), None
        items = [engine.encode(NAME_Q, image=EncodedImage(features=v, token_ids=adapter.image_token_ids)) for v in vis]
        hidden, _, _ = engine.hidden_states(items)
        last = hidden[torch.arange(len(items)), torch.tensor([len(e.input_ids) - 1 for e in items])]
        said = adapter.lm_head(last)[:, [first[n] for n in names]].argmax(1)
        return (near == truth).float().mean().item(), (said == truth).float().mean().item()

    words_top1, llm_top1 = naming(adapter.model.projector)
    assert words_top1 >= 0.5 and llm_top1 >= 0.3, (words_top1, llm_top1)  # measured 0.90 and 0.50
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = Projector(adapter.model.config.vision_dim, adapter.model.config.hidden_size)
    assert naming(untrained, llm=False)[0] <= 0.2  # an untrained projector: 0.10 (and 0.10 for the LLM, measured)


def test_text_answer(adapter):
    engine = YoLLaVA(adapter)
    assert "4" in engine.chat("What is 2+2?", max_new_tokens=16)


def test_photo_answer(adapter):
    """Chat (the int8 runtime on a CPU) names what is in a real photo, and the answer follows the photo."""
    root = default_data_root() / "pool" / "imagenet"
    pizza, plane = next(root.glob("*_pizza.jpg"), None), next(root.glob("*_airliner.jpg"), None)
    if not (pizza and plane):
        pytest.skip("needs the shared ImageNet pool photos")
    engine = YoLLaVA(adapter)
    question = "What is in this photo? Answer with a single word or phrase."
    answers = [engine.chat(question, image=p, max_new_tokens=6) for p in (pizza, plane)]
    assert "pizza" in answers[0].lower() and "pizza" not in answers[1].lower(), answers


def test_int8_generation_is_the_cpu_default_answers_and_leaves_scores_and_concept_free_answers_alone(adapter, photo):
    engine = YoLLaVA(adapter)
    question = "What is 2+2?"
    assert adapter.default_generation() == "int8"  # on a CPU
    adapter.set_generation("fp32")
    reference = engine.chat("What is in this photo?", image=photo, max_new_tokens=8)
    checksums = {k: v.double().sum().item() for k, v in adapter.model.llm.state_dict().items()}
    adapter.set_generation("int8")
    try:
        assert adapter.generation_runtime == "int8"
        adapter.prepare_generation()  # the int8 copy shares the fp32 tensors it does not replace: they must stay as they were
        assert {k: v.double().sum().item() for k, v in adapter.model.llm.state_dict().items()} == checksums
        assert all(type(m) is not type(adapter.generation_modules()[1]) for m in adapter.model.llm.modules())
        plain = engine.chat(question, max_new_tokens=16)
        assert "4" in plain
        # synthesised training answers ask for the model itself, whatever the chat runtime
        assert adapter.generation_modules(exact=True)[1] is adapter.lm_head is not adapter.generation_modules()[1]
        assert engine.chat("What is in this photo?", image=photo, max_new_tokens=8, exact=True) == reference
        assert engine.chat_many([("What is in this photo?", photo)], max_new_tokens=8, exact=True) == [reference]
        engine.new_concept("bo", k=4, seed=0)  # a concept loaded must not change a prompt that does not name it
        assert engine.chat(question, max_new_tokens=16) == plain
        int8_scores = engine.yes_probabilities("bo", [photo])
    finally:
        adapter.set_generation("fp32")
    assert engine.yes_probabilities("bo", [photo]) == int8_scores  # recognition always runs the fp32 model
    engine.unload_concept("bo")
    with pytest.raises(ValueError, match="'fp32' or 'int8'"):
        adapter.set_generation("int4")


def test_bf16_training_copy_trains_like_fp32_and_leaves_the_model_and_scores_alone(adapter, photo):
    from yollava.runtime import native_bf16

    engine = YoLLaVA(adapter)
    assert adapter.fast_training_precision() == ("bf16" if native_bf16(adapter.device) else None)
    concept = engine.new_concept("bo", k=4, seed=0)
    concept.requires_grad_(True)
    items = [engine.encode("Is <bo> in this photo?", image=photo, answer=a) for a in ("Yes", "No, <bo> is not in this photo.")]
    scores = engine.yes_probabilities("bo", [photo])
    checksums = {k: v.double().sum().item() for k, v in adapter.model.llm.state_dict().items()}

    def loss_and_grad(precision, cache=None):
        concept.zero_grad(set_to_none=True)
        loss = engine.loss(items, cache, precision=precision)
        loss.backward()
        return loss.item(), torch.cat([concept.input_rows.grad.flatten(), concept.output_row.grad.flatten()])

    loss32, grad32 = loss_and_grad(None)
    loss16, grad16 = loss_and_grad("bf16")
    cached16 = loss_and_grad("bf16", {})  # the prefix cache keeps bf16 keys/values for a bf16 loss
    decoder, head = adapter.training_modules("bf16")
    assert head.weight.dtype == torch.bfloat16 and head is not adapter.lm_head
    assert adapter.training_modules("bf16")[1] is head  # made once
    assert not any(p.requires_grad for p in head.parameters())
    assert abs(loss16 - loss32) < 0.02 and abs(cached16[0] - loss16) < 0.02
    assert F.cosine_similarity(grad16, grad32, dim=0) > 0.995 and F.cosine_similarity(cached16[1], grad32, dim=0) > 0.995
    # the copy shares the norms and rotary buffers but has its own bf16 Linear weights: the fp32 model is exactly as it was
    assert {k: v.double().sum().item() for k, v in adapter.model.llm.state_dict().items()} == checksums
    assert all(p.dtype == torch.float32 and p.grad is None for p in adapter.model.llm.parameters())
    concept.requires_grad_(False)
    assert engine.yes_probabilities("bo", [photo]) == scores  # scoring always runs the fp32 model
    engine.unload_concept("bo")


def test_pocket_v1_stays_loadable_by_name_and_loads_the_concepts_committed_on_it():
    from yollava.concepts import load_concept
    from yollava.models import load_model

    v1 = load_model("pocket-v1", progress=False)
    assert v1.model.config.grid == 3 and v1.model.config.n_visual_tokens == 10
    fp = v1.fingerprint()
    assert fp["pocket_version"] == 1 and fp["pocket_weights_sha256"] == "1f1daf6ac23f4389"  # v1's hash in every committed run
    committed = __import__("pathlib").Path(__file__).parents[1] / "benchmarks/results/eval_caption_bo/results.run/concepts/yollava"
    assert load_concept(committed, "bo", fp).name == "bo"
