"""The HTTP server on a tiny model: the concept life cycle over the API, streaming, users, robustness."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from yollava.concepts import Concept  # noqa: E402
from yollava.concepts.io import save_concept  # noqa: E402
from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import Limits, ServerConfig, create_app  # noqa: E402
from yollava.serve.testing import data_url, jpeg_bytes, one_torch_thread, tiny_recipe  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


REDS = [(200 + 10 * i, 10 * i, 20) for i in range(3)]


@pytest.fixture(scope="module")
def serve_engine(tiny_model_dirs) -> YoLLaVA:
    """One loaded tiny LLaVA shared by every server of this module (servers never change it)."""
    return YoLLaVA(load_model(str(tiny_model_dirs["llava"])))


def make_server(engine, home: Path, epochs: int = 1, **kwargs):
    train, data = tiny_recipe(epochs=epochs)
    config = ServerConfig(model="tiny", home=home, train=train, data=data, **kwargs)
    app = create_app(config, engine)
    return app


def add_user(app, name: str) -> dict:
    db = app.state.server.db
    key = db.new_key(db.add_user(name))
    return {"Authorization": f"Bearer {key}"}


def upload(client, headers, name="bo", colors=REDS, **fields):
    files = [("photos", (f"{i}.jpg", jpeg_bytes(c), "image/jpeg")) for i, c in enumerate(colors)]
    return client.post("/v1/concepts", headers=headers, data={"name": name, **fields}, files=files)


def wait_job(client, headers, job_id, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def chat(client, headers, content, **kw):
    return client.post("/v1/chat/completions", headers=headers, json={"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **kw})


def assert_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"] and body["error"]["type"], body
    return body["error"]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def put_concept(engine: YoLLaVA, folder: Path, name: str, seed: int = 0) -> None:
    """A concept written straight into a user's folder (no training needed)."""
    a = engine.adapter
    concept = Concept.initialise(name, a.embed_tokens.weight, a.lm_head.weight, k=2, seed=seed)
    save_concept(concept, folder, a.fingerprint())


# ---- the whole life cycle --------------------------------------------------------------------
@pytest.mark.slow
def test_concept_life_cycle(serve_engine, tiny_model_dirs, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home, epochs=2)
    h = add_user(app, "alice")
    with TestClient(app) as c:
        before = files_under(home)
        r = upload(c, h)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert_error(upload(c, h), 409)  # already being trained
        job = wait_job(c, h, job["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"]["epoch"] == 2 and job["progress"]["fraction"] == 1.0
        assert job["progress"]["step"] == job["progress"]["total_steps"] > 0
        assert job["result"]["best_epoch"] in (0, 1)

        concepts = c.get("/v1/concepts", headers=h).json()["data"]
        assert [x["name"] for x in concepts] == ["bo"] and concepts[0]["status"] == "ready" and concepts[0]["photos"] == 3
        assert c.get("/v1/concepts/bo", headers=h).json()["k"] == 2

        r = chat(c, h, "What is <bo>?")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] <= 4 and body["usage"]["prompt_tokens"] > 0
        photo = data_url(jpeg_bytes(REDS[0]))
        r = chat(c, h, [{"type": "text", "text": "Is <bo> in this photo?"}, {"type": "image_url", "image_url": {"url": photo}}])
        assert r.status_code == 200, r.text

        r = c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": photo})
        assert r.status_code == 200, r.text
        (res,) = r.json()["results"]
        assert res["concept"] == "bo" and res["present"] == (res["answer"] == "Yes") == (res["p_yes"] >= res["threshold"])
        assert res["present"], res  # one of its own photos
        blue = c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": data_url(jpeg_bytes((20, 40, 220)))})
        assert blue.json()["results"][0]["p_yes"] < res["p_yes"], (res, blue.json())

        r = c.get("/v1/concepts/bo/export", headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        exported = r.content
        with zipfile.ZipFile(io.BytesIO(exported)) as zf:
            assert sorted(zf.namelist()) == ["bo.json", "bo.safetensors"]
            meta = json.loads(zf.read("bo.json"))
        photo_hashes = [p["sha256"] for p in meta["source_photos"]]
        assert sorted(photo_hashes) == sorted(hashlib.sha256(jpeg_bytes(col)).hexdigest() for col in REDS)

        r = c.delete("/v1/concepts/bo", headers=h)
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert_error(c.get("/v1/concepts/bo", headers=h), 404)
        assert_error(chat(c, h, "What is <bo>?"), 404)
        assert c.get("/v1/jobs", headers=h).json()["data"] == []  # the job record went too
        assert_error(c.delete("/v1/concepts/bo", headers=h), 404)

    # nothing derived from the photos is left: no new file, and neither the name's files nor the
    # photos' hashes nor their bytes appear in any file of the server home (the database included)
    assert files_under(home) - before <= {"server.db-wal", "server.db-shm"}, files_under(home) - before
    for p in home.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            assert not any(h_.encode() in blob for h_ in photo_hashes), p
            assert jpeg_bytes(REDS[0])[200:400] not in blob, p
            assert b"bo.safetensors" not in blob and b'"<bo>"' not in blob, p

    # import brings it back, identical rows, and it works in chat again
    app = make_server(serve_engine, home)
    with TestClient(app) as c:
        r = c.post("/v1/concepts/import", headers=h, files={"file": ("bo.zip", exported, "application/zip")})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "bo" and r.json()["status"] == "ready"
        assert chat(c, h, "What is <bo>?").status_code == 200
        assert_error(c.post("/v1/concepts/import", headers=h, files={"file": ("bo.zip", exported, "application/zip")}), 409)
        r = c.post("/v1/concepts/import", headers=h, data={"name": "bo2"}, files={"file": ("bo.zip", exported, "application/zip")})
        assert r.status_code == 201 and r.json()["name"] == "bo2"
        r = c.post("/v1/recognize", headers=h, json={"concepts": ["bo", "bo2"], "image": data_url(jpeg_bytes())})
        a, b = r.json()["results"]
        assert a["p_yes"] == pytest.approx(b["p_yes"])  # the same rows under two names

        # a concept made for another base model: refused with both models named
        other = YoLLaVA(load_model(str(tiny_model_dirs["llava_other"])))
        put_concept(other, tmp_path / "other", "rex")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for suffix in (".json", ".safetensors"):
                zf.write(tmp_path / "other" / f"rex{suffix}", f"rex{suffix}")
        err = assert_error(c.post("/v1/concepts/import", headers=h, files={"file": ("rex.zip", buf.getvalue(), "application/zip")}), 409)
        assert "trained for base model" in err["message"] and err["code"] == "concept_model_mismatch"
        assert not (home / "users").joinpath("1", "concepts", "rex.json").exists()

        # damaged uploads: 422, and nothing is left behind
        assert_error(c.post("/v1/concepts/import", headers=h, files={"file": ("x.zip", b"not a zip", "application/zip")}), 422)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf, zipfile.ZipFile(io.BytesIO(exported)) as src:
            zf.writestr("bo.json", src.read("bo.json"))
            zf.writestr("bo.safetensors", src.read("bo.safetensors")[:-7] + b"garbage")
        err = assert_error(c.post("/v1/concepts/import", headers=h, data={"name": "bo3"}, files={"file": ("bo.zip", buf.getvalue(), "application/zip")}), 422)
        assert "hash" in err["message"]
        assert not list((home / "users" / "1").glob("imports/*"))
        assert not (home / "users" / "1" / "concepts" / "bo3.json").exists()


def test_api_chat_matches_engine(serve_engine, tmp_path):
    """Greedy answers over HTTP are exactly what ``YoLLaVA.chat`` gives with the same concept."""
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo", seed=3)
    direct = YoLLaVA(serve_engine.adapter, concepts_dir=home / "users" / "1" / "concepts")
    photo = jpeg_bytes(REDS[1])


    pil = Image.open(io.BytesIO(photo)).convert("RGB")
    with TestClient(app) as c:
        for text, image in (("What is <bo>?", None), ("Is <bo> in this photo?", pil), ("Describe the dog.", None)):
            content = text if image is None else [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(photo)}}]
            got = chat(c, h, content, max_tokens=6).json()["choices"][0]["message"]["content"]
            assert got == direct.chat(text, image=image, max_new_tokens=6)
        # several turns and a system message are accepted and rendered with the chat template
        r = c.post("/v1/chat/completions", headers=h, json={"messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <bo>"},
            {"role": "assistant", "content": "Hello."}, {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": "And now?"}], "max_tokens": 3})
        assert r.status_code == 200, r.text


def test_streaming_format(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo")
    with TestClient(app) as c:
        full = chat(c, h, "Tell me about <bo>.", max_tokens=8).json()
        with c.stream("POST", "/v1/chat/completions", headers=h, json={
            "messages": [{"role": "user", "content": "Tell me about <bo>."}], "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode()
        # stop strings cut the answer (and the generation) before them
        text = _stream_text(raw)
        assert text == full["choices"][0]["message"]["content"] and len(text.strip()) > 2, text  # never skipped
        stop = text.strip()[1:3]
        cut = chat(c, h, "Tell me about <bo>.", max_tokens=8, stop=[stop]).json()
        assert cut["choices"][0]["message"]["content"] == text[: text.find(stop)].strip()
        assert cut["choices"][0]["finish_reason"] == "stop"
        assert cut["usage"]["completion_tokens"] < full["usage"]["completion_tokens"] == 8  # generation stopped too (2 of 8)
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert {x["object"] for x in chunks} == {"chat.completion.chunk"} and len({x["id"] for x in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == full["usage"]
    last = chunks[-2]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] == full["choices"][0]["finish_reason"]
    assert text == full["choices"][0]["message"]["content"]


def _stream_text(raw: str) -> str:
    out = []
    for event in raw.split("\n\n"):
        if event.startswith("data: {"):
            for choice in json.loads(event[6:])["choices"]:
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


# ---- users -----------------------------------------------------------------------------------
def test_users_are_isolated(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    alice, bob = add_user(app, "alice"), add_user(app, "bob")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo", seed=1)
    put_concept(serve_engine, home / "users" / "1" / "concepts", "anna", seed=2)
    photo = data_url(jpeg_bytes())
    with TestClient(app) as c:
        r = upload(c, alice, name="rex")
        alice_job = r.json()["id"]
        assert c.get("/v1/concepts", headers=bob).json()["data"] == []
        for method, path in (("GET", "/v1/concepts/bo"), ("DELETE", "/v1/concepts/bo"), ("GET", "/v1/concepts/bo/export"),
                             ("GET", f"/v1/jobs/{alice_job}"), ("DELETE", f"/v1/jobs/{alice_job}")):
            assert_error(c.request(method, path, headers=bob), 404)
        assert c.get("/v1/jobs", headers=bob).json()["data"] == []
        err = assert_error(chat(c, bob, "What is <bo>?"), 404)  # in chat too: no hint that alice has one
        assert "alice" not in err["message"] and "users/1" not in err["message"]
        assert_error(c.post("/v1/chat/completions", headers=bob, json={"messages": [{"role": "user", "content": "hi"}], "concepts": ["anna"]}), 404)
        assert_error(c.post("/v1/recognize", headers=bob, json={"concepts": ["bo"], "image": photo}), 404)
        assert chat(c, alice, "What is <bo>?").status_code == 200
        wait_job(c, alice, alice_job)

        # bob's own <bo>: both exist, each user gets their own rows
        put_concept(serve_engine, home / "users" / "2" / "concepts", "bo", seed=7)
        pa = c.post("/v1/recognize", headers=alice, json={"concepts": ["bo"], "image": photo}).json()["results"][0]["p_yes"]
        pb = c.post("/v1/recognize", headers=bob, json={"concepts": ["bo"], "image": photo}).json()["results"][0]["p_yes"]
        direct_a = YoLLaVA(serve_engine.adapter, concepts_dir=home / "users" / "1" / "concepts")
        direct_b = YoLLaVA(serve_engine.adapter, concepts_dir=home / "users" / "2" / "concepts")


        assert pa != pb
        assert pa == pytest.approx(direct_a.yes_probabilities("bo", [Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")])[0], abs=1e-5)
        assert pb == pytest.approx(direct_b.yes_probabilities("bo", [Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")])[0], abs=1e-5)
        assert c.delete("/v1/concepts/bo", headers=bob).status_code == 200
        assert c.get("/v1/concepts/bo", headers=alice).status_code == 200  # alice's is untouched


def test_authentication(serve_engine, tmp_path):
    app = make_server(serve_engine, tmp_path / "home")
    h = add_user(app, "alice")
    db = app.state.server.db
    with TestClient(app) as c:
        err = assert_error(c.get("/v1/concepts"), 401)
        assert "Bearer" in err["message"]
        assert_error(c.get("/v1/concepts", headers={"Authorization": "Bearer yk-000000000000-nope"}), 401)
        assert_error(c.get("/v1/concepts", headers={"Authorization": "Basic abc"}), 401)
        assert_error(c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}), 401)
        assert c.get("/v1/me", headers=h).json()["name"] == "alice"
        assert c.get("/healthz").json()["status"] == "ok"  # health and the page need no key
        assert "<title>yollava</title>" in c.get("/").text
        db.revoke_keys(db.get_user("alice"))
        assert_error(c.get("/v1/me", headers=h), 401)
    # keys are stored salted and hashed, never in clear
    key = h["Authorization"].split()[1]
    assert key.encode() not in (tmp_path / "home" / "server.db").read_bytes()
    assert key.split("-", 2)[2].encode() not in b"".join(p.read_bytes() for p in (tmp_path / "home").glob("server.db*"))


# ---- robustness: every bad input is a 4xx with a JSON error --------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels (header only): refused before any pixel is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_bad_inputs_are_4xx(serve_engine, tmp_path):
    home = tmp_path / "home"
    limits = Limits(max_photos=4, max_request_bytes=2_000_000, max_photo_bytes=500_000, max_tokens_limit=64)
    app = make_server(serve_engine, home, limits=limits)
    h = add_user(app, "alice")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo")
    good = jpeg_bytes()
    truncated = good[: len(good) // 2]
    huge = png_header(20_000, 20_000)

    def up(*blobs, name="dog"):
        return c.post("/v1/concepts", headers=h, data={"name": name}, files=[("photos", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)])

    def msg(content, **kw):
        return c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": content}], "max_tokens": 2, **kw})

    def img(url):
        return [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]

    with TestClient(app, raise_server_exceptions=False) as c:
        cases = [
            (up(good, b"this is not a photo"), 422, "photo 2"),
            (up(good, truncated), 422, "not a readable image"),
            (up(huge), 413, "pixels"),
            (up(good, name="my dog"), 422, "invalid concept name"),
            (up(good, name="bo"), 409, "already have"),
            (up(good, name="dog_1"), 422, "reserved"),
            (up(good, name="image"), 422, "special token"),
            (up(*[good] * 5), 413, "at most 4 photos"),
            (up(b"x" * 600_000), 413, "larger than"),
            (up(b"x" * 2_100_000), 413, "request body"),
            (c.post("/v1/concepts", headers=h, data={"name": "dog"}), 422, "photos"),
            (c.post("/v1/concepts", headers=h, json={"name": "dog"}), 415, "multipart"),
            (msg(img(data_url(b"this is not a photo"))), 422, "not a readable image"),
            (msg(img(data_url(truncated))), 422, "not a readable image"),
            (msg(img(data_url(huge, "image/png"))), 413, "pixels"),
            (msg(img("https://example.com/dog.jpg")), 422, "not fetched"),
            (msg(img("data:image/jpeg;base64,@@@@")), 422, "readable"),
            (msg(img(data_url(good)) + [{"type": "image_url", "image_url": {"url": data_url(good)}}]), 422, "one photo"),
            (msg([{"type": "audio", "data": "x"}]), 422, "unsupported content part"),
            (msg("Is <rex> here?"), 404, "unknown concept <rex>"),
            (msg("an <image> marker"), 422, "<image>"),
            (msg("hi", max_tokens=10_000), 422, "max_tokens"),
            (msg("hi", n=2), 422, "n"),
            (msg("hi", temperature=-1), 422, "temperature"),
            (c.post("/v1/chat/completions", headers=h, content=b'{"messages": [', ), 400, "not valid JSON"),
            (c.post("/v1/chat/completions", headers=h, content=b"\xff\xfe"), 400, "not valid JSON"),
            (c.post("/v1/chat/completions", headers=h, json=[1, 2]), 400, "JSON object"),
            (c.post("/v1/chat/completions", headers=h, json={"messages": []}), 422, "messages"),
            (c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "tool", "content": "x"}]}), 422, "role"),
            (c.post("/v1/chat/completions", headers=h, json={"messages": "hello"}), 422, "messages"),
            (c.post("/v1/recognize", headers=h, json={"concepts": ["rex"], "image": data_url(good)}), 404, "rex"),
            (c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": data_url(truncated)}), 422, "readable"),
            (c.post("/v1/recognize", headers=h, json={"concepts": ["../etc"], "image": data_url(good)}), 422, "invalid concept name"),
            (c.post("/v1/recognize", headers=h, json={"concepts": ["bo"]}), 422, "image"),
            (c.get("/v1/concepts/..%2Fserver", headers=h), 404, "no such endpoint"),
            (c.get("/v1/concepts/bad%20name", headers=h), 422, "invalid concept name"),
            (c.get("/v1/concepts/..", headers=h), 404, ""),
            (c.get("/v1/concepts/rex", headers=h), 404, "rex"),
            (c.get("/v1/jobs/job-nope", headers=h), 404, "job"),
            (c.get("/v1/nothing-here", headers=h), 404, "no such endpoint"),
            (c.put("/v1/concepts", headers=h), 405, "Method Not Allowed"),
            (c.post("/v1/concepts/import", headers=h, files={"file": ("x.zip", b"PK\x03\x04broken", "application/zip")}), 422, "zip"),
        ]
        for i, (r, status, words) in enumerate(cases):
            err = assert_error(r, status)
            assert words.lower() in err["message"].lower(), (i, err)
        # nothing was stored for the refused uploads, and the server still works
        assert c.get("/v1/jobs", headers=h).json()["data"] == []
        assert not (home / "users" / "1" / "jobs").exists() or not list((home / "users" / "1" / "jobs").iterdir())
        assert msg("What is <bo>?").status_code == 200


def test_cancel_and_delete_while_training(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home, epochs=100_000)
    h = add_user(app, "alice")
    with TestClient(app) as c:
        before = files_under(home)
        job = upload(c, h).json()
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job['id']}", headers=h).json()["progress"].get("epoch", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        concept = c.get("/v1/concepts/bo", headers=h).json()
        assert concept["status"] == "training" and concept["progress"]["step"] >= 2
        assert_error(chat(c, h, "What is <bo>?"), 409)  # not ready yet
        assert c.delete("/v1/concepts/bo", headers=h).status_code == 200
        assert c.get("/v1/jobs", headers=h).json()["data"] == []
        assert files_under(home) - before <= {"server.db-wal", "server.db-shm"}

        job = upload(c, h).json()  # a job can also be cancelled on its own
        r = c.delete(f"/v1/jobs/{job['id']}", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert not (home / "users" / "1" / "jobs" / job["id"]).exists()
        assert not (home / "users" / "1" / "concepts" / "bo.json").exists()


# ---- restarts --------------------------------------------------------------------------------
@pytest.mark.slow
def test_restart_resumes_interrupted_job(serve_engine, tmp_path):
    """A server stopped mid-training resumes the job from its last epoch checkpoint when it starts again."""
    home = tmp_path / "home"
    app = make_server(serve_engine, home, epochs=200)
    h = add_user(app, "alice")
    with TestClient(app) as c:
        job = upload(c, h).json()
        while c.get(f"/v1/jobs/{job['id']}", headers=h).json()["progress"].get("epoch", 0) < 3:
            time.sleep(0.02)
    stopped = app.state.server.db.get_job(job["id"])
    assert stopped["status"] == "queued" and "interrupted" in stopped["phase"]
    ckpt = json.loads((home / "users" / "1" / "jobs" / job["id"] / "checkpoints" / "bo.ckpt.json").read_text())
    assert ckpt["epoch"] >= 2

    app2 = make_server(serve_engine, home, epochs=1)  # the job keeps the recipe it was submitted with
    with TestClient(app2) as c:
        done = wait_job(c, h, job["id"])
        assert done["status"] == "succeeded", done
        assert done["resumed"] == 1 and done["progress"]["resumed_from_epoch"] >= ckpt["epoch"] + 1
        assert done["progress"]["epoch"] == 200
        meta = c.get("/v1/concepts/bo", headers=h).json()
        assert meta["recipe"]["train"]["epochs"] == 200 and meta["recipe"]["name"] == "fast-modified"
    assert not (home / "users" / "1" / "jobs").exists() or not list((home / "users" / "1" / "jobs").iterdir())


@pytest.mark.slow
def test_restart_fails_unresumable_jobs_with_a_reason(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    db = app.state.server.db
    user = db.get_user("alice")
    recipe = app.state.server.config.recipe()
    gone = db.add_job(user, "bo", recipe, 3, False)  # "running" when the server died, photos lost
    db.update_job(gone, status="running", phase="training")
    kept = db.add_job(user, "anna", recipe, 1, False)
    photos = home / "users" / "1" / "jobs" / kept / "photos"
    photos.mkdir(parents=True)
    (photos / "photo-00.jpg").write_bytes(jpeg_bytes())
    app_no_resume = make_server(serve_engine, home, resume_jobs=False)
    with TestClient(app_no_resume) as c:
        j = c.get(f"/v1/jobs/{gone}", headers=h).json()
        assert j["status"] == "failed" and "photos are gone" not in j["error"] and "restart" in j["error"]
        j = c.get(f"/v1/jobs/{kept}", headers=h).json()
        assert j["status"] == "failed" and "restart" in j["error"]
        assert not photos.exists()  # its uploads were removed with it
    # with resuming on, a job whose photos are gone fails and says why
    gone2 = db.add_job(user, "rex", recipe, 2, False)
    app3 = make_server(serve_engine, home)
    with TestClient(app3) as c:
        j = c.get(f"/v1/jobs/{gone2}", headers=h).json()
        assert j["status"] == "failed" and "photos are gone" in j["error"]


def test_users_commands(serve_engine, tmp_path):
    from typer.testing import CliRunner

    from yollava.cli.serve import app as cli
    from yollava.serve.db import Database

    home = tmp_path / "home"
    run = lambda *a: CliRunner().invoke(cli, [*a, "--home", str(home)])  # noqa: E731
    r = run("users", "add", "alice")
    assert r.exit_code == 0
    key = r.stdout.strip()
    assert key.startswith("yk-") and len(key.splitlines()) == 1  # stdout holds only the key
    assert run("users", "add", "alice").exit_code == 1
    key2 = run("users", "key", "alice").stdout.strip()
    assert key2.startswith("yk-") and key2 != key
    assert "alice\t2 key(s)" in run("users", "list").stdout
    db = Database(home / "server.db")
    assert db.authenticate(key).name == "alice" and db.authenticate(key2).name == "alice"
    assert db.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert run("users", "revoke", "alice").exit_code == 0
    assert Database(home / "server.db").authenticate(key) is None
    (home / "users" / "1" / "concepts").mkdir(parents=True)
    assert run("users", "rm", "alice", "--yes").exit_code == 0
    assert not (home / "users" / "1").exists() and run("users", "list").stdout.strip() == ""
    assert run("users", "key", "nobody").exit_code == 1


@pytest.mark.slow
def test_full_recipe_job(serve_engine, tmp_path):
    """Conversations synthesised by the base model and negatives from a (tiny) photo pool: the answer
    cache lives in the job's folder and goes with it; the pool index is the server's, not the user's."""
    from yollava.personalize import DataConfig
    from yollava.train import TrainConfig

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(6):
        (pool / f"p{i}.jpg").write_bytes(jpeg_bytes((20 * i, 200, 40 * i)))
    home = tmp_path / "home"
    data = DataConfig(conversations=True, conversation_tokens=3, n_easy_negatives=2, n_hard_negatives=2)
    config = ServerConfig(model="tiny", home=home, train=TrainConfig(epochs=1, k=2), data=data, pool_dirs=[pool])
    app = create_app(config, serve_engine)
    h = add_user(app, "alice")
    with TestClient(app) as c:
        job = upload(c, h).json()
        deadline = time.monotonic() + 300
        while (j := c.get(f"/v1/jobs/{job['id']}", headers=h).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert j["status"] == "succeeded", j
        meta = json.loads((home / "users" / "1" / "concepts" / "bo.json").read_text())
        counts = meta["counts"]
        assert counts["conversation"] > 0 and counts["negative"] + counts["hard_negative"] > 0, counts
        assert not (home / "users" / "1" / "jobs").exists() or not list((home / "users" / "1" / "jobs").iterdir())
        assert c.delete("/v1/concepts/bo", headers=h).status_code == 200
    left = {p.relative_to(home).parts[0] for p in home.rglob("*") if p.is_file()}
    assert left <= {"server.db", "server.db-wal", "server.db-shm", "pool"}, left
    assert not list((home / "users").rglob("*.*"))
