"""What the web page builds on: a job's stages with the time spent and left (calibration and saving included,
so the bar never sits full), thumbnails of a concept's photos, the name check, the photo count rule, the
list of running jobs, and the page's own files (a favicon among them)."""

from __future__ import annotations

import base64
import contextlib
import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import ServerConfig, create_app  # noqa: E402
from yollava.personalize import ConceptPipeline  # noqa: E402
from yollava.serve.job_progress import STAGES, learn_rates, plan_stages, timeline  # noqa: E402
from yollava.serve.testing import jpeg_bytes, tiny_recipe  # noqa: E402
from yollava.train import TrainerCallback  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's


@pytest.fixture(scope="module")
def serve_engine(tiny_model_dirs) -> YoLLaVA:
    return YoLLaVA(load_model(str(tiny_model_dirs["llava"])))


def make_server(engine, home: Path, epochs: int = 2):
    train, data = tiny_recipe(epochs=epochs)
    return create_app(ServerConfig(model="tiny", home=home, train=train, data=data), engine)


def add_user(app, name: str) -> dict:
    db = app.state.server.db
    return {"Authorization": f"Bearer {db.new_key(db.add_user(name))}"}


def upload(c, h, name="bo", n=3, **fields):
    files = [("photos", (f"{i}.jpg", jpeg_bytes((200, 10 * i, 20), size=300), "image/jpeg")) for i in range(n)]
    return c.post("/v1/concepts", headers=h, data={"name": name, **fields}, files=files)


def wait_job(c, h, job_id, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := c.get(f"/v1/jobs/{job_id}", headers=h).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


# ---- the time line, on its own --------------------------------------------------------------------
def test_timeline_estimates_what_is_left_from_what_was_measured():
    now = 1000.0
    stages = plan_stages(conversations=False, photos_seconds=0.5, now=now - 20)
    assert [s["key"] for s in stages] == [k for k in STAGES if k != "answers"]
    by = {s["key"]: s for s in stages}
    by["queue"].update(status="done", seconds=1.0)
    by["head"].update(status="done", started=now - 19, seconds=1.0)
    by["encode"].update(status="done", started=now - 18, seconds=2.0, done=20, total=20, base=0)  # 0.1 s a sample
    by["train"].update(status="running", started=now - 10, done=10, total=50, base=0)           # 1 s a step
    by["calibrate"]["total"] = 8
    out, left = timeline(stages, now, rates={}, batch=8)
    got = {s["key"]: s for s in out}
    assert got["train"]["seconds"] == 10 and got["train"]["remaining"] == pytest.approx(40)
    assert got["calibrate"]["remaining"] == pytest.approx(1.0)  # 8 photos at the measured 1/8 s a training sample
    assert got["save"]["remaining"] == 1.0 and got["encode"]["remaining"] == 0
    assert left == pytest.approx(42.0, abs=0.1)
    # before its first step is timed, training (and so the whole) is not known: no guess from the cheap stages before it
    by["train"].update(done=0)
    out, left = timeline(stages, now, rates={}, batch=8)
    assert {s["key"]: s for s in out}["train"]["remaining"] is None and left is None
    by["train"].update(done=10)
    # a stage nothing can estimate yet (no count, never timed here): the whole is not known
    by["calibrate"].pop("total")
    assert timeline(stages, now, rates={}, batch=8)[1] is None
    # what a finished job measured estimates the next one
    by["calibrate"].update(status="done", seconds=3.0)
    rates: dict[str, float] = {}
    learn_rates(rates, stages)
    assert rates["encode/unit"] == pytest.approx(0.1) and rates["calibrate"] == 3.0 and "train/unit" not in rates  # train was running
    fresh = plan_stages(conversations=False, now=now)
    assert {s["key"]: s for s in timeline(fresh, now, rates)[0]}["calibrate"]["remaining"] == 3.0


# ---- a real job -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_stage_is_reported_calibration_and_saving_too(serve_engine, tmp_path, monkeypatch):
    app = make_server(serve_engine, tmp_path / "home", epochs=3)
    h = add_user(app, "alice")
    server = app.state.server
    seen: dict[str, dict] = {}
    real = ConceptPipeline.train

    class Spy(TrainerCallback):  # what a client polling the job would see at these moments
        def __init__(self):
            self.job_id = None

        def view(self):
            jobs = server.db.list_jobs(status=("running",))
            return server.jobs.view(jobs[0])

        @contextlib.contextmanager
        def step_context(self, state, kind):
            if kind == "evaluate" and state.global_step >= state.max_steps:
                seen["calibrating"] = self.view()
            elif kind == "train" and "training" not in seen and state.global_step >= 1:
                seen["training"] = self.view()
            yield

        def on_train_end(self, state):
            seen["after training"] = self.view()

    monkeypatch.setattr(ConceptPipeline, "train", lambda self, *a, callbacks=(), **kw: real(self, *a, callbacks=[*callbacks, Spy()], **kw))
    with TestClient(app) as c:
        job = upload(c, h).json()
        assert job["stage"] == "queue" and [s["status"] for s in job["progress"]["stages"][:2]] == ["done", "running"]
        assert c.get("/v1/jobs?status=active", headers=h).json()["data"][0]["id"] == job["id"]
        done = wait_job(c, h, job["id"])
        assert c.get("/v1/jobs?status=active", headers=h).json()["data"] == []
        assert [j["id"] for j in c.get("/v1/jobs?status=succeeded,failed", headers=h).json()["data"]] == [job["id"]]
        assert c.get("/v1/jobs?status=lost", headers=h).status_code == 422

        # a second job: estimated from the first one from the start
        second = upload(c, h, name="rex").json()
        assert second["remaining_seconds"] is not None and second["remaining_seconds"] > 0
        wait_job(c, h, second["id"])

    training = seen["training"]
    assert training["stage"] == "train" and training["remaining_seconds"] is not None
    stages = {s["key"]: s for s in training["progress"]["stages"]}
    assert stages["train"]["total"] == training["progress"]["total_steps"] and stages["train"]["remaining"] > 0
    assert [stages[k]["status"] for k in ("photos", "queue", "head", "encode")] == ["done"] * 4
    assert stages["calibrate"]["status"] == stages["save"]["status"] == "pending"
    # after the last step the bar is not full: it is calibrating, then saving
    cal = seen["calibrating"]
    assert cal["stage"] == "calibrate" and "calibrating" in cal["phase"]
    assert {s["key"]: s["status"] for s in cal["progress"]["stages"]}["train"] == "done"
    assert seen["after training"]["stage"] == "save" and "saving" in seen["after training"]["phase"]

    assert done["status"] == "succeeded" and done["stage"] is None and done["remaining_seconds"] == 0
    assert [s["key"] for s in done["progress"]["stages"]] == [k for k in STAGES if k != "answers"]
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in done["progress"]["stages"])
    assert done["elapsed_seconds"] >= sum(s["seconds"] for s in done["progress"]["stages"][2:]) - 0.5
    final = {s["key"]: s for s in done["progress"]["stages"]}
    assert final["train"]["done"] == final["train"]["total"] == done["progress"]["total_steps"]


# ---- thumbnails, the name check, the photo count ---------------------------------------------------------
@pytest.mark.slow
def test_thumbnails_name_check_and_photo_count(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home, epochs=1)
    h = add_user(app, "alice")
    with TestClient(app) as c:
        # fewer than 3 photos: refused (after each photo was checked), nothing stored
        r = upload(c, h, n=2)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_few_photos" and "at least 3" in r.json()["error"]["message"]
        assert c.get("/v1/jobs", headers=h).json()["data"] == [] and not (home / "users" / "1" / "jobs").exists()
        r = c.post("/v1/concepts", headers=h, data={"name": "bo"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_few_photos"
        # a bad photo names itself in param (the page marks its preview)
        files = [("photos", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(2)] + [("photos", ("x.jpg", b"not a photo", "image/jpeg"))]
        r = c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=files)
        assert r.status_code == 422 and r.json()["error"]["param"] == "photos[2]"
        assert c.get("/v1/me", headers=h).json()["limits"]["min_photos"] == 3

        # the name check
        def check(name):
            r = c.get(f"/v1/concepts/{name}/available", headers=h)
            assert r.status_code == 200, r.text
            return r.json()

        assert check("bo") == {"object": "concept_name", "name": "bo", "available": True, "code": None, "message": None}
        assert check("bo_1")["code"] == "invalid_name" and not check("bo_1")["available"]
        assert check("image")["code"] == "reserved_name"

        job = upload(c, h).json()
        assert check("bo")["code"] in ("job_exists", None)  # None only if it already finished
        thumbs = c.get("/v1/concepts/bo/thumbnails", headers=h).json()["data"]
        assert len(thumbs) == 3  # while it trains, from the job's folder
        assert wait_job(c, h, job["id"])["status"] == "succeeded"
        assert check("bo")["code"] == "concept_exists"
        thumbs = c.get("/v1/concepts/bo/thumbnails", headers=h).json()["data"]
        assert len(thumbs) == 3 and all(t.startswith("data:image/jpeg;base64,") for t in thumbs)
        img = Image.open(io.BytesIO(base64.b64decode(thumbs[0].split(",", 1)[1])))
        assert max(img.size) == 160  # from a 300 px photo
        folder = home / "users" / "1" / "thumbnails" / "bo"
        assert sorted(p.name for p in folder.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
        assert c.get("/v1/concepts/rex/thumbnails", headers=h).status_code == 404

        # imported over <bo>: its old photos are not shown for the new concept
        blob = c.get("/v1/concepts/bo/export", headers=h).content
        assert zipfile.is_zipfile(io.BytesIO(blob))
        r = c.post("/v1/concepts/import", headers=h, data={"overwrite": "true"}, files={"file": ("bo.zip", blob, "application/zip")})
        assert r.status_code == 201, r.text
        assert c.get("/v1/concepts/bo/thumbnails", headers=h).json()["data"] == [] and not folder.exists()
        # deleted: its thumbnails go with it
        job = upload(c, h, name="rex").json()
        wait_job(c, h, job["id"])
        assert (home / "users" / "1" / "thumbnails" / "rex").is_dir()
        assert c.delete("/v1/concepts/rex", headers=h).status_code == 200
        assert not (home / "users" / "1" / "thumbnails").exists()


def test_the_page_and_its_files(serve_engine, tmp_path):
    app = make_server(serve_engine, tmp_path / "home")
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and '<script src="/static/app.js"' in page.text and 'rel="icon"' in page.text
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.content
        assert c.get("/favicon.ico").headers["content-type"] == "image/svg+xml"
        r = c.get("/static/..%2Fjobs.py")
        assert r.status_code == 404 and "jobs.py" not in r.text.replace("..%2Fjobs.py", "").replace("../jobs.py", "")
        assert c.get("/static/index.html").status_code == 404
        # the page builds nothing from HTML strings and loads nothing from elsewhere
        js = c.get("/static/app.js").text
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "http://" not in js and "https://" not in js
