"""One matrix over every supported Hugging Face VLM family, each a tiny random checkpoint built here.

Per family: photo tokens spliced exactly as the family's own forward does (dynamic resolution,
tiles, 3-D RoPE, deepstack, bidirectional photo attention), KV-cached generation agreeing with a
full forward, concept-free logits bit-identical, base weights bit-identical after training, a tiny
concept that separates synthetic photos, the save/load round trip, a bf16 base with fp32 concept
rows, and loading by model id from a Hugging Face cache.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

import yollava.engine.model as engine_module
from yollava.concepts import load_concept
from yollava.prompts import RECOGNITION_QUERY
from yollava import YoLLaVA
from yollava.models import Message, load_model
from yollava.models.tiny import TINY_BUILDERS
from yollava.train import ConceptTrainer, Sample, TrainConfig, recognition_metrics

from .conftest import make_photos, other_colour, reddish

FAMILIES = sorted(TINY_BUILDERS)
_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")

    def get(family: str):
        if family not in _BUILT:
            _BUILT[family] = TINY_BUILDERS[family](root / family, init_range=0.15)
        return _BUILT[family]

    return get


@pytest.fixture(params=FAMILIES)
def fam_engine(request, family_dirs, tmp_path) -> YoLLaVA:
    return YoLLaVA(load_model(str(family_dirs(request.param))), concepts_dir=tmp_path / "concepts")


def _reference_logits(adapter, ids: torch.Tensor, img: Image.Image) -> torch.Tensor:
    """The plain transformers forward, given our token ids and the processor's pixel tensors."""
    inputs = adapter.processor_inputs(img) if hasattr(adapter, "processor_inputs") else adapter.processor.image_processor([img], return_tensors="pt")
    kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids") and torch.is_tensor(v)}
    is_image = (ids == adapter.image_token_id).int()
    if adapter.family.startswith("qwen"):
        kwargs["mm_token_type_ids"] = is_image
    if adapter.family == "gemma3":
        kwargs["token_type_ids"] = is_image  # what Gemma3Processor returns: photos attend to themselves bidirectionally
    with torch.no_grad():
        return adapter.model(input_ids=ids, **kwargs).logits


def test_forward_is_the_family_forward_and_concepts_leave_it_exact(fam_engine: YoLLaVA):
    a = fam_engine.adapter
    img = Image.new("RGB", (40, 56), (120, 20, 220))  # not square: exercises tiling / dynamic resolution
    plain = fam_engine.encode("Describe the photo.", image=img)
    assert plain.input_ids.count(a.image_token_id) == plain.images[0].features.shape[0] > 0
    hidden, ids, _ = fam_engine.hidden_states([plain])
    ours = a.lm_head(hidden)
    torch.testing.assert_close(ours, _reference_logits(a, ids, img), rtol=1e-4, atol=1e-4)

    fam_engine.new_concept("bo", k=3)
    again = fam_engine.encode("Describe the photo.", image=img)
    assert again.input_ids == plain.input_ids
    hidden2, _, _ = fam_engine.hidden_states([again])
    logits = fam_engine.bank.logits(hidden2, a.lm_head)
    assert torch.equal(logits[..., : a.vocab_size], ours)
    assert a.render([Message("user", "hi", True)]).count(a.image_marker) == 1
    assert a.end_of_turn in a.reserved_tokens() or a.end_of_turn == a.tokenizer.eos_token
    if a.model.config.get_text_config().tie_word_embeddings:  # Gemma 3: the concept's output row is its own
        assert a.lm_head.weight.data_ptr() == a.embed_tokens.weight.data_ptr()
        c = fam_engine.bank["bo"]
        assert c.output_row.data_ptr() != c.input_rows.data_ptr()


def test_cached_generation_agrees_with_a_full_forward(fam_engine: YoLLaVA, monkeypatch):
    """Positions after the prompt (3-D RoPE), deepstack and photo masks are right in the KV-cached decode."""
    fam_engine.new_concept("bo", k=2)
    img = Image.new("RGB", (48, 40), (20, 160, 60))
    chosen: list[int] = []
    real = engine_module._sample

    def record(logits, *args):
        chosen.append(real(logits, *args))
        return chosen[-1]

    monkeypatch.setattr(engine_module, "_sample", record)
    monkeypatch.setattr(type(fam_engine.adapter), "eos_token_ids", property(lambda self: []))
    list(fam_engine.stream_chat("What is <bo> doing?", image=img, max_new_tokens=5))
    assert len(chosen) == 5
    enc = fam_engine.encode("What is <bo> doing?", image=img)
    full = engine_module.Encoded(enc.input_ids + chosen[:-1], [False] * (len(enc.input_ids) + 4), enc.images)
    hidden, _, _ = fam_engine.hidden_states([full])
    logits = fam_engine.bank.logits(hidden[0, len(enc.input_ids) - 1 :], fam_engine.adapter.lm_head)
    assert logits.argmax(-1).tolist() == chosen


def test_batched_generation_gives_each_prompts_own_answer(fam_engine: YoLLaVA, monkeypatch):
    """Prompts of different lengths (photo or none, a concept or none) generated together, left-padded: the
    same greedy tokens as each prompt alone (positions counted from each prompt's first real token)."""
    fam_engine.new_concept("bo", k=2, seed=3)
    monkeypatch.setattr(type(fam_engine.adapter), "eos_token_ids", property(lambda self: []))
    prompts = [("What is <bo> doing?", Image.new("RGB", (48, 40), (20, 160, 60))), ("Describe <bo> in a few words, please.", None),
               ("Hi", None), ("What colour is this?", Image.new("RGB", (40, 56), (200, 30, 30)))]
    items = [fam_engine.encode(q, image=img) for q, img in prompts]
    assert len({len(e.input_ids) for e in items}) > 1  # padding is exercised
    alone = [list(fam_engine.model.generate_ids(fam_engine.bank, e, 6)) for e in items]
    together = fam_engine.model.generate_batch_ids(fam_engine.bank, items, 6)
    assert together == alone and all(len(a) == 6 for a in alone)
    assert fam_engine.chat_many(prompts, max_new_tokens=6) == [fam_engine.chat(q, image=img, max_new_tokens=6) for q, img in prompts]


def test_a_padded_batch_of_photos_scores_as_each_photo_alone(fam_engine: YoLLaVA):
    """Photos of different sizes (with dynamic resolution: different photo-token counts and padding) in one batch: the
    concept's scores and answer losses are those of each photo alone (3-D RoPE, deepstack features and
    photo attention placed per row, concept rows reach every row)."""
    fam_engine.new_concept("bo", k=3, seed=1)
    photos = [Image.new("RGB", size, colour) for size, colour in
              [((40, 56), (200, 30, 30)), ((64, 32), (30, 200, 30)), ((28, 28), (30, 30, 200)), ((56, 72), (220, 60, 40))]]
    alone = [p for photo in photos for p in fam_engine.yes_probabilities("bo", [photo])]
    assert fam_engine.yes_probabilities("bo", photos) == pytest.approx(alone, abs=1e-5)
    items = [fam_engine.encode("Is <bo> in this photo?", image=p, answer=a) for p, a in zip(photos, ["Yes", "No", "No", "Yes"])]
    if fam_engine.adapter.family.startswith("qwen"):  # dynamic resolution: rows of different lengths
        assert len({len(e.input_ids) for e in items}) > 1
    each = torch.stack([fam_engine.loss([e]) for e in items])
    hidden, ids, answer = fam_engine.hidden_states(items)
    batched = torch.stack([
        torch.nn.functional.cross_entropy(fam_engine.bank.logits(hidden[i, :-1][answer[i, 1:]], fam_engine.adapter.lm_head).float(), ids[i, 1:][answer[i, 1:]])
        for i in range(len(items))
    ])
    torch.testing.assert_close(batched, each, rtol=1e-5, atol=1e-5)


#: the quick run (``-m "not slow"``) trains these two families; every family trains in the full run (~10 s each)
QUICK_FAMILIES = ("llava", "qwen2_vl")


@pytest.mark.parametrize("family", [f if f in QUICK_FAMILIES else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_training_learns_a_concept_and_leaves_the_base_bit_identical(family_dirs, family, tmp_path):
    fam_engine = YoLLaVA(load_model(str(family_dirs(family))), concepts_dir=tmp_path / "concepts")
    # trained on the query that yes_probabilities reads, as the product recipe does (SHORT_QUERIES[0]): a
    # tiny random base does not carry a concept from one wording to another (tiny Qwen3-VL trained on
    # "Is <bo> in this photo?" separates on that wording, AUC 1.0, and is inverted on the query, AUC 0.01)
    q = RECOGNITION_QUERY.format(identifier="<bo>")
    pos = make_photos(tmp_path / "pos", 16, reddish, seed=1)
    neg = make_photos(tmp_path / "neg", 32, other_colour, seed=2)
    samples = [Sample(q, "Yes", p, "positive") for p in pos] + [Sample(q, "No", p, "negative") for p in neg]
    before = {k: v.clone() for k, v in fam_engine.adapter.model.state_dict().items()}
    result = ConceptTrainer(fam_engine, "bo", TrainConfig(k=4, epochs=20, lr=3e-2, batch_size=8, seed=0), progress=False).fit(samples)
    after = fam_engine.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.concept.input_rows.dtype == torch.float32

    test_pos = make_photos(tmp_path / "tpos", 10, reddish, seed=11)
    test_neg = make_photos(tmp_path / "tneg", 10, other_colour, seed=12)
    scores = fam_engine.yes_probabilities("bo", test_pos + test_neg)
    m = recognition_metrics([True] * 10 + [False] * 10, scores, result.concept.threshold)
    assert m["auc"] >= 0.9, m

    # save / load round trip: bit-exact rows, same logits in a fresh engine on the same checkpoint
    fam_engine.save_concept("bo", tmp_path / "saved")
    other = YoLLaVA(load_model(fam_engine.adapter.model_id), concepts_dir=tmp_path / "saved")
    loaded = other.load_concept("bo")
    assert torch.equal(loaded.input_rows, result.concept.input_rows) and torch.equal(loaded.output_row, result.concept.output_row)
    assert load_concept(tmp_path / "saved", "bo", other.fingerprint()).meta["base_model"]["family"] == fam_engine.adapter.family
    assert other.yes_probabilities("bo", test_pos[:2]) == pytest.approx(scores[:2], abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_base_trains_fp32_concept_rows(family_dirs, family, tmp_path):
    adapter = load_model(str(family_dirs(family)), device="cpu", dtype="bf16")
    assert adapter.model_dtype == torch.bfloat16 and adapter.dtype == torch.float32
    eng = YoLLaVA(adapter, tmp_path)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    c = eng.new_concept("bo", k=2)
    c.requires_grad_(True)
    assert c.input_rows.dtype == torch.float32
    photo = make_photos(tmp_path / "p", 1, reddish)[0]
    loss = eng.loss([eng.encode("Is <bo> here?", image=photo, answer="Yes"), eng.encode("What is <bo>?", answer="A dog.")])
    loss.backward()
    assert torch.isfinite(loss) and c.input_rows.grad.dtype == torch.float32 and c.input_rows.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_by_model_id_from_the_hf_cache(family_dirs, family, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / f"models--tiny--{family}" / "snapshots" / ("0" * 40)
    shutil.copytree(family_dirs(family), snapshot)
    (cache / f"models--tiny--{family}" / "refs").mkdir()
    (cache / f"models--tiny--{family}" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    import transformers.utils.hub as hf_hub

    monkeypatch.setattr(hf_hub, "HF_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    adapter = load_model(f"tiny/{family}")
    assert adapter.family == family and adapter.model_id == f"tiny/{family}"
    with pytest.raises(FileNotFoundError) as e:
        load_model(f"tiny/absent-{family}")
    assert str(cache / f"models--tiny--absent-{family}") in str(e.value)
