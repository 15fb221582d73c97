"""Yo'Chameleon on a tiny random Janus (a unified model that reads and draws), built here: the family's own image
generation reproduced with concepts in the prompt, a concept with generation and understanding token sets trained
with reconstruction, soft positives and self-prompting, its file round trip, and the refusals."""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from yollava import YoLLaVA
from yollava.concepts import Concept, UnifiedConcept, load_concept
from yollava.data.samples import Sample
from yollava.data.soft_positives import retrieve_soft_positives, soft_positive_token_counts
from yollava.engine.drawing import DRAW_PROMPT, draw_prompt, generate_codes, generate_image, image_loss, require_writer, self_prompt
from yollava.errors import CannotGenerateImagesError, CorruptConceptError
from yollava.models import load_model
from yollava.models.tiny import build_tiny_janus
from yollava.prompts import RECOGNITION_QUERY
from yollava.train.yochameleon import (UNIFIED_RECIPES, YoChameleonConfig, get_unified_recipe, new_unified_concept,
                                       reconstruction_item, train_unified, understanding_answer)

pytestmark = pytest.mark.usefixtures("one_thread")

#: on this tiny model 16 generation tokens learn a photo's codes in 100 steps (4 generation tokens barely do)
CONFIG = YoChameleonConfig(generation_tokens=16, understanding_tokens=2, soft_positives=2, epochs=100, lr=1e-2, batch_size=4)


def subject(seed: int = 0, size: int = 32) -> Image.Image:
    """The subject: a red block on blue."""
    im = Image.new("RGB", (size, size), (40, 60, 200))
    ImageDraw.Draw(im).rectangle([8, 8, 22, 24], fill=(220, 40 + seed, 30))
    return im


def plain(seed: int, size: int = 32) -> Image.Image:
    rng = random.Random(seed)
    return Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3)))


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    return build_tiny_janus(tmp_path_factory.mktemp("janus") / "janus", init_range=0.15)


@pytest.fixture(scope="module")
def adapter(janus_dir, one_thread):
    return load_model(str(janus_dir))


@pytest.fixture(scope="module")
def trained(adapter, tmp_path_factory):
    """A concept trained once for the module: 2 photos of the subject, 2 look-alikes, a few understanding samples."""
    root = tmp_path_factory.mktemp("yc")
    eng = YoLLaVA(adapter, root / "concepts")
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    q = RECOGNITION_QUERY.format(identifier="<bo>")
    pos, neg = root / "pos.png", root / "neg.png"
    subject().save(pos)
    plain(3).save(neg)
    samples = [Sample(q, "Yes", pos, "positive"), Sample(q, "No", neg, "negative"),
               Sample("What colour is <bo>?", "<bo> is red.", None, "conversation")]
    photos = [subject(), subject()]
    fresh = YoLLaVA(adapter, root / "fresh")
    new_unified_concept(fresh, "bo", CONFIG)  # the same starting rows as training (same seed)
    result = train_unified(eng, "bo", samples, photos, [plain(10), plain(11)], CONFIG, recipe_name="yochameleon-test")
    return eng, fresh, result, before, adapter.image_codes([subject()])


def test_image_generation_is_the_family_generate(adapter):
    """Without concepts, the engine's drawing loop gives the codes of transformers' own
    ``generate(generation_mode="image")`` (greedy, classifier-free guidance), and codes decode to pictures."""
    eng = YoLLaVA(adapter, "unused")
    enc = draw_prompt(eng.model, eng.bank, "A photo of a dog.")
    gen_config = adapter.model.generation_config
    gen_config.generation_kwargs = {"boi_token_id": adapter.image_start_id}  # what Janus checkpoints' config carries
    ids = torch.tensor([enc.input_ids + [adapter.image_start_id]])
    for scale in (5.0, 2.0):
        ref = adapter.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                     do_sample=False, guidance_scale=scale)
        ours = generate_codes(eng.model, eng.bank, enc, n=1, guidance=scale, temperature=0)
        assert torch.equal(ours, ref)
    codes = adapter.image_codes([subject(), plain(1)])
    assert codes.shape == (2, adapter.num_image_tokens) and not torch.equal(codes[0], codes[1])
    pictures = adapter.decode_image_codes(codes)
    assert [p.size for p in pictures] == [(32, 32)] * 2 and pictures[0].mode == "RGB"
    assert np.asarray(pictures[0]).std() > 0


def test_training_leaves_the_base_bit_identical_and_learns_to_draw(trained):
    eng, fresh, result, before, codes = trained
    after = eng.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    concept = result.concept
    assert isinstance(concept, UnifiedConcept) and concept.k == 18 and concept.latent_output_rows.dtype == torch.float32

    # the generation loss on the subject's image codes falls (same prompt, the starting rows vs the trained ones)
    def loss(engine):
        c = engine.bank["bo"]
        with torch.no_grad():
            return image_loss(engine.model, engine.bank, [reconstruction_item(engine, c, codes[0])])[0].item()

    assert loss(eng) < loss(fresh) - 1.5, (loss(fresh), loss(eng))
    hist = [h["image"] for h in result.history]
    assert hist[-1] < hist[0] - 1.5

    # what it draws is closer to the training photos' codes than what an untrained concept draws (measured 0.2 vs 0.02)
    mine = generate_image(eng, "A photo of <bo>.", n=8, seed=0)
    other = generate_image(fresh, "A photo of <bo>.", n=8, seed=0)
    match = lambda d: (d.codes == codes).float().mean().item()  # noqa: E731
    assert match(mine) > match(other) + 0.1, (match(mine), match(other))
    greedy = [generate_image(e, "A photo of <bo>.", n=1, guidance=1.0, temperature=0) for e in (eng, fresh)]
    assert match(greedy[0]) > match(greedy[1]) + 0.25, [match(g) for g in greedy]  # measured 0.375 vs 0.0
    assert len(mine.images) == 8 and mine.images[0].size == (32, 32)


def test_self_prompting_emits_the_token_set_each_task_needs(trained):
    eng, fresh, result, _, _ = trained
    c = result.concept
    gen, und = c.task_tokens("generation"), c.task_tokens("understanding")
    assert gen == [f"<bo_{i}>" for i in range(1, 17)] and und == ["<bo_17>", "<bo_18>"]
    drawing = draw_prompt(eng.model, eng.bank, f"{c.system_prefix} {DRAW_PROMPT.format(identifier='<bo>')}")
    assert [eng.bank.id_token(t) for t in self_prompt(eng.model, eng.bank, drawing, len(gen))] == gen
    question = eng.encode("What colour is <bo>?")
    assert [eng.bank.id_token(t) for t in self_prompt(eng.model, eng.bank, question, len(und))] == und
    assert generate_image(eng, "A photo of <bo>.", n=1).self_prompted == gen
    answer = eng.chat("What colour is <bo>?", max_new_tokens=len(und) + 4)
    assert "<bo_" not in answer  # the emitted set is not part of the answer's text
    # an untrained concept emits no set: self-prompting is learned
    assert self_prompt(fresh.model, fresh.bank, fresh.encode("What colour is <bo>?"), 2) == []


def test_the_concept_file_round_trip_and_checks(trained, adapter, tmp_path):
    eng, _, result, _, _ = trained
    eng.save_concept("bo", tmp_path)
    other = YoLLaVA(adapter, tmp_path)
    loaded = other.load_concept("bo")
    c = result.concept
    assert isinstance(loaded, UnifiedConcept) and loaded.meta["unified"] == c.meta["unified"]
    for name in ("input_rows", "output_row", "latent_output_rows"):
        assert torch.equal(getattr(loaded, name), getattr(c, name))
    assert loaded.meta["recipe"]["name"] == "yochameleon-test" and loaded.meta["counts"]["soft_positives"] == 2
    assert torch.equal(generate_image(other, "A photo of <bo>.", seed=3).codes, generate_image(eng, "A photo of <bo>.", seed=3).codes)

    # a file with latent output rows but no description of the token sets, or the reverse, is refused
    from safetensors.torch import load_file, save_file

    meta = json.loads((tmp_path / "bo.json").read_text())
    tensors = load_file(tmp_path / "bo.safetensors")
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(tensors, bad / "bo.safetensors")
    (bad / "bo.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("unified", "tensors_sha256")}))
    with pytest.raises(CorruptConceptError, match="no 'unified'"):
        load_concept(bad, "bo")
    save_file({k: v for k, v in tensors.items() if k != "latent_output_rows"}, bad / "bo.safetensors")
    (bad / "bo.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "tensors_sha256"}))
    with pytest.raises(CorruptConceptError, match="latent_output_rows"):
        load_concept(bad, "bo")
    (bad / "bo.json").write_text(json.dumps({**{k: v for k, v in meta.items() if k != "tensors_sha256"},
                                             "unified": {"generation": [1, 40], "understanding": [17, 18]}}))
    with pytest.raises(CorruptConceptError, match="unified.generation"):
        load_concept(bad, "bo")


def test_an_understanding_only_concept_keeps_working_and_refuses_to_draw(adapter, tmp_path):
    eng = YoLLaVA(adapter, tmp_path)
    plain_concept = eng.new_concept("mug", k=2)
    eng.save_concept("mug", tmp_path)
    loaded = YoLLaVA(adapter, tmp_path).load_concept("mug")
    assert type(loaded) is Concept and torch.equal(loaded.input_rows, plain_concept.input_rows)
    assert len(eng.yes_probabilities("mug", [subject()])) == 1
    with pytest.raises(CannotGenerateImagesError, match=r"<mug> cannot be drawn: it has no generation tokens.*--recipe yochameleon"):
        generate_image(eng, "A photo of <mug> on a beach")
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_image(eng, "  ")


def test_models_that_cannot_draw_refuse_and_name_the_ones_that_can(tmp_path):
    from yollava.models.pocket import PocketAdapter

    pocket = object.__new__(PocketAdapter)  # the refusal needs no weights: it is the class that cannot draw
    pocket.model_id = "pocket"
    assert PocketAdapter.can_generate_images is False
    with pytest.raises(CannotGenerateImagesError) as e:
        require_writer(pocket)
    text = str(e.value)
    assert "'pocket'" in text and "cannot draw" in text and "Janus" in text and "janus" in text and "none is bundled" in text


def test_recipes_and_ablations_shape_the_concept(adapter, tmp_path):
    assert set(UNIFIED_RECIPES) == {"yochameleon", "yochameleon-no-soft-positives", "yochameleon-no-self-prompting",
                                    "yochameleon-shared-tokens"}
    paper = get_unified_recipe("yochameleon").train
    assert (paper.generation_tokens, paper.understanding_tokens, paper.k) == (16, 16, 32) and paper.self_prompting
    assert get_unified_recipe("yochameleon-no-soft-positives").train.soft_positives == 0
    with pytest.raises(ValueError, match="unknown Yo'Chameleon recipe"):
        get_unified_recipe("chameleon")
    with pytest.raises(ValueError, match="generation_tokens must equal"):
        YoChameleonConfig(generation_tokens=4, understanding_tokens=2, shared_tokens=True)

    eng = YoLLaVA(adapter, tmp_path)
    shared = new_unified_concept(eng, "bo", YoChameleonConfig(generation_tokens=3, understanding_tokens=3, shared_tokens=True))
    assert shared.k == 3 and shared.task_tokens("generation") == shared.task_tokens("understanding") == ["<bo_1>", "<bo_2>", "<bo_3>"]
    assert shared.system_prefix == "<bo> is <bo_1><bo_2><bo_3>."
    c = new_unified_concept(eng, "bo", YoChameleonConfig(generation_tokens=3, understanding_tokens=2))
    assert c.system_prefix == "<bo> is <bo_1><bo_2><bo_3><bo_4><bo_5>."  # <sks> is <g-tokens><u-tokens>.
    assert understanding_answer(c, "<bo> is red.") == "<bo_4><bo_5> <bo> is red." and understanding_answer(c, "Yes") == "Yes"
    codes = adapter.image_codes([subject()])[0]
    soft = reconstruction_item(eng, c, codes, n_tokens=1)  # a look-alike described with 1 of the 3 generation tokens
    answer = [eng.bank.id_token(t) for t, m in zip(soft.enc.input_ids, soft.enc.answer_mask) if m]
    assert answer == ["<bo_1>"]
    off = new_unified_concept(eng, "bo", YoChameleonConfig(generation_tokens=3, understanding_tokens=2, self_prompting=False))
    assert understanding_answer(off, "<bo> is red.") == "<bo> is red."
    soft_off = reconstruction_item(eng, off, codes, n_tokens=1)
    assert not any(soft_off.enc.answer_mask)
    text = eng.model.decode(eng.bank, soft_off.enc.input_ids)  # latent tokens are not shown: count them by id
    assert sum(eng.bank.id_token(t) in ("<bo_1>", "<bo_2>", "<bo_3>") for t in soft_off.enc.input_ids) == 1
    assert "A photo of <bo>." in text


def test_soft_positives_closer_look_alikes_get_more_tokens(tmp_path):
    assert soft_positive_token_counts(4, 16) == [15, 12, 8, 4]
    assert soft_positive_token_counts(3, 1) == [1, 1, 1] and soft_positive_token_counts(0, 16) == []
    counts = soft_positive_token_counts(30, 16)
    assert counts == sorted(counts, reverse=True) and counts[0] < 16 and counts[-1] >= 1

    class Pool:  # the ImagePool surface retrieval reads: entries and unit-norm vectors
        entries = [{"path": f"/pool/{i}.jpg"} for i in range(5)]

        def __len__(self):
            return 5

        def vectors(self):
            v = np.array([[1, 0], [0.9, 0.44], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    found = retrieve_soft_positives(Pool(), np.array([[1.0, 0.0]]), 3, exclude=["/pool/2.jpg"])
    # /pool/0 is a near-duplicate of the photo (cosine 1.0) and /pool/2 is excluded
    assert [str(p) for p, _ in found] == ["/pool/1.jpg", "/pool/4.jpg", "/pool/3.jpg"]
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_personalize_with_the_yochameleon_recipe_from_photos_and_a_pool(adapter, tmp_path):
    """Photos in, drawing concept out: Yo'LLaVA's understanding data, look-alikes from the pool index as soft
    positives (never the negatives it trains on), the concept saved with its recipe, photos and soft positives."""
    from yollava.data.pool import ImagePool
    from yollava.recipes import DataConfig

    from .conftest import ColourEmbedder

    photos_dir, pool_dir = tmp_path / "bo", tmp_path / "pool"
    photos_dir.mkdir()
    pool_dir.mkdir()
    for i in range(3):
        subject(i * 5).save(photos_dir / f"{i}.png")
    for i in range(10):  # reddish look-alikes of different closeness, and others
        im = subject(i) if i < 6 else plain(50 + i)
        ImageDraw.Draw(im).rectangle([0, 0, 4 + 3 * i, 4], fill=(255, 255, 255))
        im.save(pool_dir / f"{i}.png")
    pool = ImagePool.build_or_update([pool_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    eng = YoLLaVA(adapter, tmp_path / "concepts")
    from yollava.who.embedding import set_embedder

    set_embedder(eng, ColourEmbedder())  # the pool's embedder, for the concept's visual signature
    config = YoChameleonConfig(generation_tokens=3, understanding_tokens=2, soft_positives=3, epochs=2, batch_size=4)
    made = eng.personalize("bo", [photos_dir], recipe="yochameleon", config=config, pool=pool,
                           data=DataConfig(n_easy_negatives=1, n_hard_negatives=1, conversations=False), progress=False)
    ts = made.training_set
    negatives = {str(p) for p in [*ts.easy_negatives, *(h.path for h in ts.hard_negatives)]}
    assert len(made.soft_positives) == 3 and negatives and not negatives & {str(p) for p, _ in made.soft_positives}
    sims = [s for _, s in made.soft_positives]
    assert sims == sorted(sims, reverse=True)
    meta = json.loads((tmp_path / "concepts" / "bo.json").read_text())
    assert meta["recipe"]["name"] == "yochameleon-modified" and meta["unified"]["generation"] == [1, 3]
    assert meta["soft_positive_tokens"] == soft_positive_token_counts(3, 3) and len(meta["source_photos"]) == 3
    assert meta["counts"]["soft_positives"] == 3 and meta["stage"] == "trained"
    assert meta["visual"]["embedder"] and {"prototype", "head.weight", "head.bias"} <= set(made.concept.extra_tensors)
    again = YoLLaVA(adapter, tmp_path / "concepts")
    assert len(again.generate_image("A photo of <bo> on a beach", n=2, seed=1).images) == 2
    set_embedder(again, ColourEmbedder())
    found = again.recognize("bo", photos_dir / "0.png")  # the drawing concept recognises with its head, like any other
    assert found.mode == "head" and found.answer == "Yes"


def test_cli_personalize_and_generate(janus_dir, tmp_path, monkeypatch):
    """``yollava personalize --recipe yochameleon`` then ``yollava generate``: pictures written, refusals clear."""
    from typer.testing import CliRunner

    from yollava.cli.main import app

    from .conftest import ColourEmbedder

    monkeypatch.setattr("yollava.who.embedding.default_embedder", ColourEmbedder)  # the signature's embedder, cheap

    def run(*args):
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)

    photos = tmp_path / "bo"
    photos.mkdir()
    for i in range(3):
        subject(i).save(photos / f"{i}.png")
    concepts = tmp_path / "concepts"
    made = run("personalize", "bo", photos, "--model", janus_dir, "--concepts-dir", concepts, "--recipe", "yochameleon-no-soft-positives",
               "--epochs", 1, "--no-conversations", "--no-hard-negatives", "--n-easy", 0)
    assert made.exit_code == 0, made.output
    assert "generation" in made.output and "yollava generate bo" in made.output
    meta = json.loads((concepts / "bo.json").read_text())
    assert meta["recipe"]["name"] == "yochameleon-no-soft-positives-modified" and meta["counts"]["soft_positives"] == 0
    assert meta["visual"]["embedder"] == ColourEmbedder.fingerprint

    out = tmp_path / "pics" / "beach.png"
    drawn = run("generate", "bo", "A photo of <bo> on a beach", "--out", out, "-n", 2, "--seed", 4, "--model", janus_dir,
                "--concepts-dir", concepts)
    assert drawn.exit_code == 0, drawn.output
    first, second = Image.open(tmp_path / "pics" / "beach-1.png"), Image.open(tmp_path / "pics" / "beach-2.png")
    assert first.size == second.size == (32, 32)
    again = run("generate", "bo", "A photo of <bo> on a beach", "--out", tmp_path / "again.png", "-n", 2, "--seed", 4, "--model",
                janus_dir, "--concepts-dir", concepts)  # the same seed and request: the same pictures
    assert again.exit_code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "again-1.png")), np.asarray(first))
    assert not np.array_equal(np.asarray(first), np.asarray(second))

    refused = run("generate", "bo", "A photo of <bo>", "--model", "pocket", "--concepts-dir", concepts)
    assert refused.exit_code == 1 and "cannot draw" in refused.output and "Janus" in refused.output
    assert "none is bundled" in " ".join(refused.output.split())
    bad = run("generate", "bo", "A photo of <bo>", "--out", tmp_path / "x.txt", "--model", janus_dir, "--concepts-dir", concepts)
    assert bad.exit_code == 1 and ".png" in bad.output


def test_server_images_generations(adapter, trained, tmp_path, tiny_model_dirs):
    """``POST /v1/images/generations``: the caller's drawing concept, PNGs in b64_json, the same error model as chat."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from yollava.serve import Limits, ServerConfig, create_app
    from yollava.serve.testing import tiny_recipe

    eng, _, result, _, _ = trained

    def server(engine, home):
        train, data = tiny_recipe()
        return create_app(ServerConfig(model="tiny", home=home, train=train, data=data, limits=Limits(max_images_per_user_per_hour=6)), engine)

    def key(app, name):
        db = app.state.server.db
        return {"Authorization": f"Bearer {db.new_key(db.add_user(name))}"}

    app = server(YoLLaVA(adapter), tmp_path / "home")
    with TestClient(app) as c:
        anna, ben = key(app, "anna"), key(app, "ben")
        space = app.state.server.space_for(1)
        eng.save_concept("bo", space.concepts)  # anna's drawing concept
        plain_engine = YoLLaVA(adapter, space.concepts)
        plain_engine.new_concept("mug", k=2)
        plain_engine.save_concept("mug")
        r = c.post("/v1/images/generations", headers=anna, json={"prompt": "A photo of <bo> on a beach", "n": 2, "seed": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) == 2 and body["concepts"] == ["bo"] and body["size"] == "32x32"
        # it recalls generation tokens first (on a prompt it was not trained on, not necessarily all of them in order)
        assert body["self_prompted"] and set(body["self_prompted"]) <= set(result.concept.task_tokens("generation"))
        png = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
        assert png.format == "PNG" and png.size == (32, 32)
        again = c.post("/v1/images/generations", headers=anna, json={"prompt": "A photo of <bo> on a beach", "n": 2, "seed": 1}).json()
        assert again["data"][0]["b64_json"] == body["data"][0]["b64_json"]  # a seed gives the same pictures

        def error(resp, status, code=None):
            assert resp.status_code == status, resp.text
            err = resp.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and (code is None or err["code"] == code)
            return err["message"]

        assert "unknown concept <bo>" in error(c.post("/v1/images/generations", headers=ben, json={"prompt": "A photo of <bo>"}), 404,
                                               "concept_not_found")  # another user's concept is not there
        # a drawing concept travels as a concept zip: exported by anna, imported by ben, it draws the same for him
        exported = c.get("/v1/concepts/bo/export", headers=anna)
        assert exported.status_code == 200, exported.text
        r = c.post("/v1/concepts/import", headers=ben, files={"file": ("bo.zip", exported.content, "application/zip")})
        assert r.status_code == 201, r.text
        his = c.post("/v1/images/generations", headers=ben, json={"prompt": "A photo of <bo> on a beach", "n": 2, "seed": 1})
        assert his.status_code == 200 and his.json()["data"][0]["b64_json"] == body["data"][0]["b64_json"]
        assert "no generation tokens" in error(c.post("/v1/images/generations", headers=anna, json={"prompt": "A photo of <mug>"}), 422,
                                               "cannot_generate_images")
        assert "at most 4" in error(c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog", "n": 5}), 422)
        assert "b64_json" in error(c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog", "response_format": "url"}), 422)
        assert "32x32" in error(c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog", "size": "1024x1024"}), 422)
        error(c.post("/v1/images/generations", json={"prompt": "a dog"}), 401, "missing_api_key")
        # the hourly quota: 4 of anna's 6 pictures are drawn (refused requests do not count), ben's are his own
        assert "4 of your 6 per hour" in error(c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog", "n": 3}), 429,
                                                "image_quota_exceeded")
        assert c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog", "n": 2}).status_code == 200
        assert c.post("/v1/images/generations", headers=ben, json={"prompt": "a dog", "n": 3}).status_code == 200
        error(c.post("/v1/images/generations", headers=anna, json={"prompt": "a dog"}), 429, "image_quota_exceeded")
        error(c.post("/v1/images/generations", headers=anna, json={"n": 1}), 422)

    reader = server(YoLLaVA(load_model(str(tiny_model_dirs["llava"]))), tmp_path / "home2")  # a model that only reads
    with TestClient(reader) as c:
        r = c.post("/v1/images/generations", headers=key(reader, "anna"), json={"prompt": "a dog"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "model_cannot_draw" and "Janus" in r.json()["error"]["message"]


def test_eval_generation_task(adapter, tmp_path):
    """``yollava eval generation``'s task through the one benchmark driver: Yo'Chameleon beside the no-concept and
    text-description baselines, similarity of the drawn pictures to the subject's held-out photos vs the other subjects',
    recognition with the same concept, and an understanding-only concept recorded as unable to draw."""
    from yollava.data.pool import ImagePool
    from yollava.eval.datasets import load_folder
    from yollava.eval.driver import run_benchmark
    from yollava.eval.generation import GenerationTask
    from yollava.eval.registry import default_methods, method_names
    from yollava.eval.report import write_report
    from yollava.recipes import DataConfig, TrainConfig

    from .conftest import ColourEmbedder

    assert {"yochameleon", "yochameleon-no-soft-positives", "yochameleon-no-self-prompting", "yochameleon-shared-tokens",
            "vanilla", "text-human", "yollava"} <= set(method_names("generation"))
    assert set(default_methods("generation")) == {"yochameleon", "vanilla", "text-human"}
    root = tmp_path / "subjects"
    for i, (name, colour) in enumerate({"red_block": (220, 40, 30), "green_ball": (40, 200, 60)}.items()):
        (root / name).mkdir(parents=True)
        for j in range(4):
            im = Image.new("RGB", (32, 32), (40, 60, 200))
            ImageDraw.Draw(im).rectangle([6 + j, 8, 22, 24], fill=colour)
            im.save(root / name / f"{j}.png")
    (root / "red_block" / "description.txt").write_text("<red_block> is a red block on blue.")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    for j in range(8):
        plain(70 + j).save(pool_dir / f"{j}.png")
    pool = ImagePool.build_or_update([pool_dir], tmp_path / "idx", ColourEmbedder(), progress=False)
    ds = load_folder(root, 2, 0)
    task = GenerationTask(ds, subjects=["red_block"], n_images=2, embedder=ColourEmbedder(), max_negatives=4)
    eng = YoLLaVA(adapter, tmp_path / "unused")
    res = run_benchmark(task, eng, ["yochameleon", "vanilla", "text-human", "yollava"], tmp_path / "gen.run",
                        train=TrainConfig(k=2, epochs=2, lr=1e-2), recipe="fast",
                        data=DataConfig(n_easy_negatives=2, n_hard_negatives=0, hard_negatives=False, conversations=False),
                        pool_fn=lambda: pool, progress=False, echo=lambda s: None)
    o = res["overall"]
    for m in ("yochameleon", "vanilla", "text-human"):
        assert o[m]["images"] == 2 and -1 <= o[m]["subject_similarity"] <= 1 and 0 <= o[m]["identified"] <= 1
        assert o[m]["margin"] == pytest.approx(o[m]["subject_similarity"] - o[m]["other_similarity"])
        assert 0 <= o[m]["recognition_weighted"] <= 1
    (rec,) = [json.loads(x) for x in (tmp_path / "gen.run" / "records.jsonl").read_text().splitlines() if '"yochameleon"' in x]
    assert rec["prompt"].endswith("A photo of <red_block>.") and rec["self_prompted"] is not None
    assert (tmp_path / "gen.run" / "concepts" / "yochameleon" / "red_block.json").exists()
    assert "no generation tokens" in res["per_subject"]["yollava"]["red_block"]["unavailable"]
    md = write_report(res | {"title": "Generation"}, tmp_path / "gen.json")[1].read_text()
    assert "| yochameleon | 1 | 2 |" in md and "## Not run" in md and "no generation tokens" in md


def test_emu3_draws_through_its_vocabulary(tmp_path):
    """Emu3: the engine's drawing loop gives transformers' own ``generate`` codes (allowed tokens per position: visual
    tokens, end of line at row ends; guidance on log-probabilities), photos become codes in the same layout, and a
    concept trained on it learns to draw (image loss falls, base bit-identical)."""
    from yollava.models.tiny import build_tiny_emu3

    a = load_model(str(build_tiny_emu3(tmp_path / "emu3", init_range=0.15)))
    eng = YoLLaVA(a, tmp_path / "concepts")
    enc = draw_prompt(eng.model, eng.bank, "A photo of a dog.")
    ids = torch.tensor([enc.input_ids + a.image_prefix_ids])
    n = a.num_image_tokens
    assert a.tokenizer.decode(a.image_prefix_ids) == "<|image start|>4*4<|image token|>" and n == 4 * 5

    def allowed(batch_id, sent):
        pos = sent.shape[-1] - ids.shape[-1]
        return a.code_mask(pos).nonzero().flatten().tolist() if pos < n else list(range(a.lm_head.weight.shape[0]))

    for scale in (1.0, 3.0):
        kw = dict(negative_prompt_ids=a.unconditional_ids(ids), guidance_scale=scale) if scale > 1 else {}
        ref = a.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                               prefix_allowed_tokens_fn=allowed, **kw)[:, ids.shape[1]:]
        assert torch.equal(generate_codes(eng.model, eng.bank, enc, guidance=scale, temperature=0), ref)
    eol = a.model.model.vocabulary_mapping.eol_token_id
    codes = a.image_codes([subject(), subject().resize((48, 40))])
    assert codes.shape == (2, n) and (codes[:, 4::5] == eol).all() and not (codes[:, [0, 1, 2, 3]] == eol).any()
    assert a.decode_image_codes(codes)[0].size == (32, 32)

    before = {k: v.clone() for k, v in a.model.state_dict().items()}
    config = YoChameleonConfig(generation_tokens=16, understanding_tokens=2, soft_positives=0, epochs=40, lr=1e-2, batch_size=2)
    result = train_unified(eng, "bo", [Sample("What colour is <bo>?", "<bo> is red.", None, "conversation")], [subject(), subject()],
                           config=config)
    assert all(torch.equal(before[k], v) for k, v in a.model.state_dict().items())
    hist = [h["image"] for h in result.history]
    assert hist[-1] < hist[0] - 1.0, hist
    drawing = generate_image(eng, "A photo of <bo>.", n=2, seed=0)
    assert drawing.codes.shape == (2, n) and (drawing.codes[:, 4::5] == eol).all() and len(drawing.images) == 2
    assert drawing.self_prompted == result.concept.task_tokens("generation")


def test_hourly_picture_quota_slides_and_gives_back():
    from yollava.serve.errors import APIError
    from yollava.serve.quotas import HourlyQuota

    now = [0.0]
    quota = HourlyQuota(3, clock=lambda: now[0])
    quota.take(1, 2)
    with pytest.raises(APIError) as e:
        quota.take(1, 2)
    assert e.value.status == 429 and e.value.code == "image_quota_exceeded" and "about 3600 s" in e.value.message
    quota.take(2, 3)  # another user's hour is their own
    quota.give_back(1, 2)  # a failed drawing does not count
    quota.take(1, 3)
    now[0] = 3600.5  # an hour later the pictures no longer count
    quota.take(1, 3)
    HourlyQuota(0).take(1, 10_000)  # 0: no limit
