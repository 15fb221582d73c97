"""Many clients at once on a real uvicorn, while a concept trains: every answer is the one it gets alone."""

from __future__ import annotations

import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from yollava.concepts import Concept  # noqa: E402
from yollava.concepts.io import save_concept  # noqa: E402
from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import Limits, ServerConfig, create_app  # noqa: E402
from yollava.serve.testing import ServerThread, jpeg_bytes, one_torch_thread, tiny_recipe  # noqa: E402

#: every wait in these tests has a limit: a server that never answers fails the test instead of hanging it
WAIT_S = 120


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def _server(engine, home, **limits):
    train, data = tiny_recipe(epochs=100_000)
    app = create_app(ServerConfig(model="tiny", home=home, train=train, data=data, limits=Limits(**limits)), engine)
    db = app.state.server.db
    keys = [db.new_key(db.add_user(n)) for n in ("alice", "bob")]
    a = engine.adapter
    for uid, seed in ((1, 1), (2, 2)):
        concept = Concept.initialise("bo", a.embed_tokens.weight, a.lm_head.weight, k=2, seed=seed)
        save_concept(concept, home / "users" / str(uid) / "concepts", a.fingerprint())
    return app, [{"Authorization": f"Bearer {k}"} for k in keys]


def _answer(url, headers, prompt, stream, max_tokens=6):
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": stream}
    if not stream:
        r = httpx.post(url + "/v1/chat/completions", headers=headers, json=body, timeout=120)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]
    import json

    text = []
    with httpx.stream("POST", url + "/v1/chat/completions", headers=headers, json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                text += [c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"]]
    return "".join(text)


@pytest.mark.slow
def test_concurrent_chats_during_training(tiny_model_dirs, tmp_path):
    engine = YoLLaVA(load_model(str(tiny_model_dirs["llava"])))
    home = tmp_path / "home"
    app, (alice, bob) = _server(engine, home, max_concurrent_generations=4)
    prompts = ["What is <bo>?", "Describe <bo>.", "Is <bo> a dog?", "Where is <bo>?"]
    expected = {}
    for who, uid in (("alice", 1), ("bob", 2)):
        direct = YoLLaVA(engine.adapter, concepts_dir=home / "users" / str(uid) / "concepts")
        for p in prompts:
            expected[who, p] = direct.chat(p, max_new_tokens=6)
    assert expected["alice", prompts[0]] != expected["bob", prompts[0]] or expected["alice", prompts[1]] != expected["bob", prompts[1]]

    with ServerThread(app) as server:
        files = [("photos", (f"{i}.jpg", jpeg_bytes((200, 10 * i, 0)), "image/jpeg")) for i in range(3)]
        job = httpx.post(server.url + "/v1/concepts", headers=alice, data={"name": "rex"}, files=files, timeout=30).json()
        deadline = time.monotonic() + WAIT_S
        while httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers=alice, timeout=30).json()["progress"].get("step", 0) < 1:
            assert time.monotonic() < deadline, f"the training job made no step in {WAIT_S} s"
            time.sleep(0.05)
        step_before = httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers=alice).json()["progress"]["step"]

        results, errors = {}, []

        def client(i):
            who, headers = (("alice", alice), ("bob", bob))[i % 2]
            for j, p in enumerate(prompts):
                try:
                    results[i, j] = (who, p, _answer(server.url, headers, p, stream=(i + j) % 2 == 0))
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads), "a client waited over 300 s for its answers"
        assert not errors, errors
        assert len(results) == 6 * len(prompts)
        for who, p, got in results.values():
            assert got == expected[who, p], (who, p)
        progress = httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers=alice).json()
        assert progress["status"] == "running" and progress["progress"]["step"] > step_before  # training went on meanwhile
        assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", headers=alice, timeout=120).json()["status"] == "cancelled"


@pytest.mark.slow
def test_disconnected_stream_frees_its_slot(tiny_model_dirs, tmp_path):
    engine = YoLLaVA(load_model(str(tiny_model_dirs["llava"])))
    app, (alice, _) = _server(engine, tmp_path / "home", max_concurrent_generations=1, queue_timeout_s=20)
    alone = YoLLaVA(engine.adapter, concepts_dir=tmp_path / "home" / "users" / "1" / "concepts").chat("Describe <bo>.", max_new_tokens=2)
    with ServerThread(app) as server:
        body = {"messages": [{"role": "user", "content": "What is <bo>?"}], "max_tokens": 1000, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", headers=alice, json=body, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        # the only slot must come back although the first client left in the middle of its answer: the next request
        # is answered (not refused after queue_timeout_s) with what the model says alone
        assert _answer(server.url, alice, "Describe <bo>.", stream=False, max_tokens=2) == alone
