"""The server's "who is here": recognition without a concept list, concepts that recognise while they train,
chat that introduces the concepts found in a photo, and users who never see each other's concepts."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from yollava import who as W  # noqa: E402
from yollava.concepts import Concept, save_concept  # noqa: E402
from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import ServerConfig, create_app  # noqa: E402
from yollava.serve.testing import data_url, one_torch_thread, tiny_recipe  # noqa: E402

from .test_who import PALETTE, PaletteEmbedder, world  # noqa: E402,F401  (world: photos and a pool)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def adapter(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llava"]))


def make_engine(adapter) -> YoLLaVA:
    engine = YoLLaVA(adapter)
    W.set_embedder(engine, PaletteEmbedder())
    return engine


def jpeg(colours, seed=0, size=32) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    a = np.zeros((size, size, 3), np.float32)
    for i, c in enumerate(colours):
        a[:, i * size // len(colours):(i + 1) * size // len(colours)] = PALETTE[c]
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def add_user(app, name):
    db = app.state.server.db
    return {"Authorization": f"Bearer {db.new_key(db.add_user(name))}"}


def put_subject(engine, folder: Path, name: str, colour: str, seed: int = 0, pool=None) -> None:
    """A trained-looking concept with a signature fitted on four photos of ``colour``, against ``pool``."""
    photos = [Image.open(io.BytesIO(jpeg([colour], seed=seed * 10 + i))).convert("RGB") for i in range(4)]
    sig = W.fit_signature(photos, PaletteEmbedder(), pool)
    c = Concept.initialise(name, engine.adapter.embed_tokens.weight, engine.adapter.lm_head.weight, k=2, seed=seed)
    c.meta["stage"] = "trained"
    save_concept(W.attach_signature(c, sig), folder, engine.fingerprint())


def who(client, headers, colours, **kw):
    r = client.post("/v1/recognize", headers=headers, json={"image": data_url(jpeg(colours, seed=99)), **kw})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_recognition_ready_before_conversation_ready(adapter, tmp_path, monkeypatch):
    gate = threading.Event()
    from yollava.personalize import ConceptPipeline

    real = ConceptPipeline.train

    def gated(*args, **kwargs):  # training waits until the test has checked the instant concept
        assert gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(ConceptPipeline, "train", gated)
    train, data = tiny_recipe(epochs=1)
    app = create_app(ServerConfig(model="tiny", home=tmp_path / "home", train=train, data=data), make_engine(adapter))
    h = add_user(app, "alice")
    with TestClient(app) as c:
        t0 = time.monotonic()
        files = [("photos", (f"{i}.jpg", jpeg(["red"], seed=i), "image/jpeg")) for i in range(3)]
        job = c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=files).json()
        while not (job := c.get(f"/v1/jobs/{job['id']}", headers=h).json())["recognition_ready"]:
            assert time.monotonic() - t0 < 30, job
            time.sleep(0.05)
        assert job["status"] in ("queued", "running") and not job["conversation_ready"]
        assert 0 <= job["recognition_ready_seconds"] < 10
        listed = c.get("/v1/concepts", headers=h).json()["data"]
        assert listed[0]["status"] == "training" and listed[0]["recognition_ready"] and not listed[0]["conversation_ready"]

        r = who(c, h, ["red"])
        assert [x["concept"] for x in r["results"]] == ["bo"]
        assert r["results"][0]["mode"] == "head" and r["results"][0]["stage"] == "recognition" and r["results"][0]["present"]
        assert who(c, h, ["blue"])["results"] == []
        one = c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": data_url(jpeg(["red"]))}).json()["results"][0]
        assert one["mode"] == "head" and one["answer"] == "Yes"
        r = c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": "What is <bo>?"}], "max_tokens": 2})
        assert r.status_code == 409 and r.json()["error"]["code"] == "concept_not_ready"

        gate.set()
        while (job := c.get(f"/v1/jobs/{job['id']}", headers=h).json())["status"] in ("queued", "running"):
            assert time.monotonic() - t0 < 120, job
            time.sleep(0.1)
        assert job["status"] == "succeeded" and job["recognition_ready"] and job["conversation_ready"], job
        assert job["result"]["recognition_ready_seconds"] == job["recognition_ready_seconds"] < 10
        meta = json.loads((tmp_path / "home" / "users" / "1" / "concepts" / "bo.json").read_text())
        assert meta["stage"] == "trained" and meta["visual"]["embedder"] == PaletteEmbedder.fingerprint
        assert not list((tmp_path / "home" / "users" / "1").glob("jobs/*/instant/*"))  # gone with the job folder

        r = who(c, h, ["red"])
        assert [(x["concept"], x["stage"], x["mode"]) for x in r["results"]] == [("bo", "trained", W.DEFAULT_TRAINED_MODE)]
        for strategy in ("all", "retrieve"):  # the language model's own P(yes), said so in each answer
            checked = who(c, h, ["red"], strategy=strategy, mode="yollava")["checked"]
            assert [(x["concept"], x["mode"]) for x in checked] == [("bo", "yollava")]

        # chat with a photo and no concept named: <bo> is found and introduced
        content = [{"type": "text", "text": "Who is in this photo?"}, {"type": "image_url", "image_url": {"url": data_url(jpeg(["red"]))}}]
        r = c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": content}], "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert [x["concept"] for x in r.json()["concepts_found"]] == ["bo"]
        r = c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": content}], "max_tokens": 3, "stream": True})
        first = json.loads(r.text.split("\n\n")[0][len("data: "):])
        assert [x["concept"] for x in first["concepts_found"]] == ["bo"]
        r = c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": content}], "max_tokens": 3, "who": False})
        assert "concepts_found" not in r.json()

        assert c.delete("/v1/concepts/bo", headers=h).status_code == 200
        assert who(c, h, ["red"])["results"] == []


def test_who_is_per_user_and_follows_their_concepts(adapter, world, tmp_path, monkeypatch):
    train, data = tiny_recipe()
    engine = make_engine(adapter)
    app = create_app(ServerConfig(model="tiny", home=tmp_path / "home", train=train, data=data), engine)
    alice, bob = add_user(app, "alice"), add_user(app, "bob")
    home = tmp_path / "home" / "users"
    put_subject(engine, home / "1" / "concepts", "rouge", "red", seed=1, pool=world["pool"])
    put_subject(engine, home / "1" / "concepts", "bleu", "blue", seed=2, pool=world["pool"])
    put_subject(engine, home / "2" / "concepts", "verde", "green", seed=3, pool=world["pool"])
    with TestClient(app) as c:
        r = who(c, alice, ["red", "blue"])  # two subjects in one photo: both, best first
        assert sorted(x["concept"] for x in r["results"]) == ["bleu", "rouge"] and r["concepts_total"] == 2
        assert all(x["mode"] == "head" for x in r["results"])
        assert [x["concept"] for x in who(c, alice, ["red"], strategy="all")["results"]] == ["rouge"]
        # bob never gets alice's concepts, not even as candidates
        r = who(c, bob, ["red", "blue"], strategy="all")
        assert r["results"] == [] and [x["concept"] for x in r["checked"]] == ["verde"] and r["concepts_total"] == 1
        assert [x["concept"] for x in who(c, bob, ["green"])["results"]] == ["verde"]
        content = [{"type": "text", "text": "Who is this?"}, {"type": "image_url", "image_url": {"url": data_url(jpeg(["red"]))}}]
        r = c.post("/v1/chat/completions", headers=bob, json={"messages": [{"role": "user", "content": content}], "max_tokens": 2})
        assert r.status_code == 200 and "concepts_found" not in r.json()
        r = c.post("/v1/recognize", headers=bob, json={"concepts": ["rouge"], "image": data_url(jpeg(["red"]))})
        assert r.status_code == 404
        # a question that names a concept hears first what its head sees in the photo ("who": false: the model alone)
        import yollava.serve.routers.chat as chat_router

        asked = []
        real_session = chat_router.ChatSession
        monkeypatch.setattr(chat_router, "ChatSession", lambda engine, conversation, *a: asked.append(conversation[-1][1])
                            or real_session(engine, conversation, *a))

        def named(colour, **extra):
            content = [{"type": "text", "text": "Is <rouge> here?"}, {"type": "image_url", "image_url": {"url": data_url(jpeg([colour]))}}]
            return c.post("/v1/chat/completions", headers=alice, json={"messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra})

        r = named("red")
        assert r.status_code == 200 and [x["concept"] for x in r.json()["concepts_found"]] == ["rouge"]
        assert asked[-1] == "In this photo: <rouge>. Is <rouge> here?"
        r = named("blue")
        assert r.status_code == 200 and "concepts_found" not in r.json() and asked[-1] == "Is <rouge> here?"
        assert named("red", who=False).status_code == 200 and asked[-1] == "Is <rouge> here?"
        assert c.post("/v1/recognize", headers=bob, json={"concepts": [], "image": data_url(jpeg(["red"]))}).status_code == 422
        # the index follows the files: a concept added later is found, a deleted one is gone
        put_subject(engine, home / "2" / "concepts", "rosso", "red", seed=4, pool=world["pool"])
        assert [x["concept"] for x in who(c, bob, ["red"])["results"]] == ["rosso"]
        assert c.delete("/v1/concepts/rosso", headers=bob).status_code == 200
        assert who(c, bob, ["red"])["results"] == []
        assert [x["concept"] for x in who(c, alice, ["red"])["results"]] == ["rouge"]  # alice's untouched
