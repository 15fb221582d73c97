"""The server under attack (issue #18): each test replays one attack of an adversarial probe and checks
that it gets a clear 4xx (or stays within its bound), that the server stays up, and that nothing is
written or lost."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from yollava.concepts import Concept, save_concept  # noqa: E402
from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import Limits, ServerConfig, create_app  # noqa: E402
from yollava.serve import imports as imports_module  # noqa: E402
from yollava.serve import photos as photos_module  # noqa: E402
from yollava.serve.db import Database  # noqa: E402
from yollava.serve.photos import PhotoDecoder  # noqa: E402
from yollava.serve.spaces import UserSpace  # noqa: E402
from yollava.serve.errors import APIError  # noqa: E402
from yollava.serve.testing import ServerThread, data_url, jpeg_bytes, one_torch_thread, tiny_recipe  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def serve_engine(tiny_model_dirs) -> YoLLaVA:
    from yollava.who import embedder_for

    engine = YoLLaVA(load_model(str(tiny_model_dirs["llava"])))
    embedder_for(engine).embed([Image.new("RGB", (32, 32))])  # loaded once here, not by whichever test starts a server first
    return engine


def make_server(engine, home: Path, epochs: int = 1, **limits):
    train, data = tiny_recipe(epochs=epochs)
    return create_app(ServerConfig(model="tiny", home=home, train=train, data=data, limits=Limits(**limits)), engine)


def add_user(app, name: str) -> dict:
    db = app.state.server.db
    return {"Authorization": f"Bearer {db.new_key(db.add_user(name))}"}


def assert_error(r, status, words: str = "") -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["message"] and words.lower() in err["message"].lower(), (words, err)
    return err


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the server home but the database (which also holds job rows)."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and not p.name.startswith("server.db")}


def put_concept(engine, folder: Path, name: str, k: int = 2, seed: int = 0) -> None:
    a = engine.adapter
    save_concept(Concept.initialise(name, a.embed_tokens.weight, a.lm_head.weight, k=k, seed=seed), folder, a.fingerprint())


def parts(engine, tmp: Path, name="bo", k=2) -> tuple[dict, dict]:
    """(metadata, tensors) of a valid exported concept, to be tampered with."""
    put_concept(engine, tmp, name, k=k)
    meta = json.loads((tmp / f"{name}.json").read_text())
    from safetensors.torch import load_file

    return meta, load_file(str(tmp / f"{name}.safetensors"))


def concept_zip(meta, tensors, stem: str = "bo") -> bytes:
    """A zip as export makes it; the recorded tensor hash is kept true unless ``meta`` is given as bytes."""
    blob = tensors if isinstance(tensors, bytes) else save(tensors)
    if isinstance(meta, dict):
        meta = dict(meta)
        if "tensors_sha256" in meta:
            meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
        meta = json.dumps(meta).encode()  # NaN / Infinity come out as the bare words, as an attacker sends them
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{stem}.json", meta)
        zf.writestr(f"{stem}.safetensors", blob)
    return buf.getvalue()


def import_zip(c, h, blob, **fields):
    return c.post("/v1/concepts/import", headers=h, data=fields, files={"file": ("c.zip", blob, "application/zip")})


def chat(c, h, content, **kw):
    return c.post("/v1/chat/completions", headers=h, json={"messages": [{"role": "user", "content": content}], "max_tokens": 2, **kw})


def deflated_zeros(n_mib: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, crc32, size) of ``n_mib`` MiB of zeros, built without holding them."""
    comp, crc, chunk = zlib.compressobj(9, zlib.DEFLATED, -15), 0, bytes(1 << 20)
    out = []
    for _ in range(n_mib):
        out.append(comp.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    out.append(comp.flush())
    return b"".join(out), crc, n_mib << 20


def raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A deflated zip from (name, raw deflate data, crc, claimed uncompressed size): the size can lie."""
    body, central = bytearray(), bytearray()
    for name, data, crc, claimed in members:
        fname = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), claimed, len(fname), 0, 0, 0, 0, 0, len(body)) + fname
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), claimed, len(fname), 0) + fname + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    return bytes(body + central + end)


def deflate(data: bytes) -> tuple[bytes, int]:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush(), zlib.crc32(data)


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def black_png(width: int, height: int) -> bytes:
    """A real black PNG, compressed row by row (the pixels are never held here)."""
    comp, row = zlib.compressobj(6), b"\x00" * (1 + 3 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def remove_user_as_the_cli_does(home: Path, name: str) -> None:
    """``yollava users rm NAME --yes`` from another process: its own connection, rows then folder."""
    db = Database(home / "server.db")
    user = db.get_user(name)
    db.delete_user(user)
    shutil.rmtree(UserSpace(home, user.id).root, ignore_errors=True)
    db.close()


# ---- 1. a zip whose header lies about its size ----------------------------------------------
@pytest.mark.slow
def test_zip_header_lying_about_size_inflates_only_up_to_the_limit(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home, max_import_bytes=1_000_000)
    h = add_user(app, "alice")
    meta, tensors = parts(serve_engine, tmp_path / "src")
    meta_raw, meta_crc = deflate(json.dumps(meta).encode())
    bomb, crc, size = deflated_zeros(200)  # 200 MiB of zeros in ~200 KB, claiming to be 100 bytes
    lying = raw_zip([("bo.json", meta_raw, meta_crc, len(json.dumps(meta))), ("bo.safetensors", bomb, crc, 100)])
    honest_big = raw_zip([("bo.json", meta_raw, meta_crc, len(json.dumps(meta))), ("bo.safetensors", *deflated_zeros(2)[:2], 2 << 20)])
    many = raw_zip([(f"x{i}.json", meta_raw, meta_crc, len(json.dumps(meta))) for i in range(12)])
    with TestClient(app) as c:
        before = snapshot(home)
        tracemalloc.start()
        try:
            r = import_zip(c, h, lying)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert_error(r, 422, "damaged")  # the bytes past the claimed size fail the CRC
        assert peak < 50e6, f"inflated {peak / 1e6:.0f} MB for a {len(lying) / 1e3:.0f} KB upload"
        assert_error(import_zip(c, h, honest_big), 413, "larger than 1,000,000 bytes")
        assert_error(import_zip(c, h, many), 422, "exactly one")
        assert c.get("/healthz").status_code == 200
        assert snapshot(home) == before


# ---- 2. bad metadata: refused before anything is written; a bad file never breaks listing ------
BAD_META = [
    ({"metrics": [1]}, "metrics must be an object"),
    ({"source_photos": 5}, "source_photos must be a list"),
    ({"recognition_threshold": float("nan")}, "NaN"),
    ({"recognition_threshold": float("inf")}, "Infinity"),
    ({"recognition_threshold": "abc"}, "recognition_threshold must be a finite number"),
    ({"recognition_threshold": 7}, "from 0 to 1"),
    ({"base_model": "llava"}, "base_model must be an object"),
    ({"base_model": ["llava"]}, "base_model must be an object"),
    ("deep", "nested 5001 levels"),  # metadata nested 5,000 deep: RecursionError (500) before
]


@pytest.mark.slow
def test_bad_metadata_is_refused_and_nothing_is_written(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, tensors = parts(serve_engine, tmp_path / "src")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "anna")
    with TestClient(app) as c:
        before = snapshot(home)
        for changes, words in BAD_META:
            if changes == "deep":
                text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}"
                blob = concept_zip(text.encode(), tensors)
            else:
                blob = concept_zip({**meta, **changes}, tensors)
            assert_error(import_zip(c, h, blob), 422, words)
            assert snapshot(home) == before, changes
            assert c.get("/v1/concepts", headers=h).status_code == 200
        assert_error(import_zip(c, h, concept_zip({**meta, "pad": "x" * 300_000}, tensors)), 413, "larger than")
        assert [x["name"] for x in c.get("/v1/concepts", headers=h).json()["data"]] == ["anna"]


@pytest.mark.slow
def test_bad_files_already_on_disk_are_listed_as_unreadable_and_can_be_deleted(serve_engine, tmp_path):
    """Files an older server let in: listing and GET still work, chat and recognize are 4xx, DELETE works."""
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    folder = home / "users" / "1" / "concepts"
    put_concept(serve_engine, folder, "anna")
    for name, changes in (("m", {"metrics": [1]}), ("p", {"source_photos": 5}), ("t", {"recognition_threshold": "abc"})):
        put_concept(serve_engine, folder, name)
        meta = json.loads((folder / f"{name}.json").read_text())
        (folder / f"{name}.json").write_text(json.dumps({**meta, **changes}))
    photo = data_url(jpeg_bytes())
    with TestClient(app) as c:
        listed = {x["name"]: x for x in c.get("/v1/concepts", headers=h).json()["data"]}
        assert listed["anna"]["status"] == "ready"
        for name in ("m", "p", "t"):
            assert listed[name]["status"] == "unreadable" and "invalid metadata" in listed[name]["error"]
            got = c.get(f"/v1/concepts/{name}", headers=h)
            assert got.status_code == 200 and got.json()["status"] == "unreadable"
            assert_error(chat(c, h, f"What is <{name}>?"), 422, "invalid metadata")
            assert_error(c.post("/v1/recognize", headers=h, json={"concepts": [name], "image": photo}), 422, "invalid metadata")
            assert c.delete(f"/v1/concepts/{name}", headers=h).status_code == 200
        assert [x["name"] for x in c.get("/v1/concepts", headers=h).json()["data"]] == ["anna"]


# ---- 3. other shapes of bad concept: 4xx with a clear message -------------------------------
@pytest.mark.slow
def test_bad_tensors_are_4xx(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    rows, out = t["input_rows"], t["output_row"]
    hidden = rows.shape[1]
    cases = [
        ({"input_rows": rows[0], "output_row": out}, "(k+1, hidden) matrix"),
        ({"input_rows": rows[None], "output_row": out}, "(k+1, hidden) matrix"),
        ({"input_rows": rows[:0], "output_row": out}, "(k+1, hidden) matrix"),
        ({"input_rows": rows, "output_row": out[:-1]}, f"output_row must have shape ({hidden},)"),
        ({"input_rows": rows.to(torch.int32), "output_row": out}, "dtype int32"),
        ({"input_rows": rows, "output_row": out.to(torch.bool)}, "dtype bool"),
        ({"input_rows": torch.zeros(3, hidden + 1), "output_row": torch.zeros(hidden + 1)}, f"hidden size is {hidden}"),
        ({"input_rows": rows, "output_row": out, "extra": out.clone()}, "expected the tensors"),
    ]
    with TestClient(app) as c:
        before = snapshot(home)
        for tensors, words in cases:
            assert_error(import_zip(c, h, concept_zip(meta, tensors)), 422, words)
        assert_error(import_zip(c, h, concept_zip(meta, b"\x00" * 64)), 422, "not a readable safetensors")
        assert_error(import_zip(c, h, concept_zip({**meta, "k": 9}, t)), 422, "metadata says k = 9")
        assert_error(import_zip(c, h, concept_zip(b"[1, 2]", t)), 422, "must be a JSON object")
        assert snapshot(home) == before
        assert import_zip(c, h, concept_zip(meta, t)).status_code == 201  # the untampered one still imports


# ---- 4. NaN / Inf rows: refused at import and at load ---------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_rows_are_refused(serve_engine, tmp_path, value):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    rows = t["input_rows"].clone()
    rows[1, 0] = value
    from safetensors.torch import save_file

    folder = home / "users" / "1" / "concepts"  # as an older server stored it
    put_concept(serve_engine, folder, "bo")
    save_file({"input_rows": rows, "output_row": t["output_row"]}, str(folder / "bo.safetensors"))
    on_disk = json.loads((folder / "bo.json").read_text())
    on_disk["tensors_sha256"] = hashlib.sha256((folder / "bo.safetensors").read_bytes()).hexdigest()
    (folder / "bo.json").write_text(json.dumps(on_disk))
    with TestClient(app) as c:
        before = snapshot(home)
        assert_error(import_zip(c, h, concept_zip(meta, {"input_rows": rows, "output_row": t["output_row"]}), name="rex"), 422, "NaN or infinite")
        photo = data_url(jpeg_bytes())
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": photo}), 422, "NaN or infinite")
        assert_error(chat(c, h, "What is <bo>?"), 422, "NaN or infinite")
        assert_error(chat(c, h, "What is <bo>?", temperature=1.0, seed=1), 422, "NaN or infinite")
        assert snapshot(home) == before
        assert chat(c, h, "hello").status_code == 200


# ---- 5. JSON bodies nested deep, lone surrogates, non-finite numbers -----------------------
def test_hostile_json_bodies_are_4xx(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = {**add_user(app, "alice"), "Content-Type": "application/json"}
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo")
    deep = '{"messages": [{"role": "user", "content": "hi", "x": ' + "[" * 5000 + "]" * 5000 + "}]}"
    with TestClient(app) as c:
        for path in ("/v1/chat/completions", "/v1/recognize"):
            assert_error(c.post(path, headers=h, content=deep), 400, "nested 5003 levels deep")
        surrogate = '{"messages": [{"role": "user", "content": "hi \\ud800"}], "max_tokens": 2}'
        assert_error(c.post("/v1/chat/completions", headers=h, content=surrogate), 400, "surrogate")
        split = '{"messages": [{"role": "user", "content": [{"type": "text", "text": "<bo> \\udfff"}]}]}'
        assert_error(c.post("/v1/chat/completions", headers=h, content=split), 400, "surrogate")
        nan = '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
        assert_error(c.post("/v1/chat/completions", headers=h, content=nan), 400, "NaN")
        values = json.dumps({"messages": [{"role": "user", "content": "hi"}], "x": [0] * 200_000})  # 600 KB, 200,001 values
        assert_error(c.post("/v1/chat/completions", headers=h, content=values), 400, "more than 100,000 values")
        pair = '{"messages": [{"role": "user", "content": "dog \\ud83d\\udc36"}], "max_tokens": 2}'  # a valid pair is fine
        assert c.post("/v1/chat/completions", headers=h, content=pair).status_code == 200
        assert chat(c, h, "What is <bo>?").status_code == 200


# ---- 6. names with control characters -----------------------------------------------------
@pytest.mark.parametrize("suffix", ["\n", "\r", "\t"])
def test_names_with_control_characters_are_refused(serve_engine, tmp_path, suffix):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo")
    bad = "bo" + suffix
    with TestClient(app) as c:
        before = snapshot(home)
        assert_error(import_zip(c, h, concept_zip({**meta, "name": bad}, t)), 422, "invalid concept name")
        assert_error(import_zip(c, h, concept_zip(meta, t), name="rex" + suffix), 422, "invalid concept name")
        photos = [("photos", ("0.jpg", jpeg_bytes(), "image/jpeg"))]
        assert_error(c.post("/v1/concepts", headers=h, data={"name": "rex" + suffix}, files=photos), 422, "invalid concept name")
        quoted = bad.replace("\n", "%0A").replace("\r", "%0D").replace("\t", "%09")
        for method, path in (("GET", f"/v1/concepts/{quoted}"), ("GET", f"/v1/concepts/{quoted}/export"), ("DELETE", f"/v1/concepts/{quoted}")):
            assert_error(c.request(method, path, headers=h), 422, "invalid concept name")
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": [bad], "image": data_url(jpeg_bytes())}), 422, "invalid concept name")
        assert snapshot(home) == before
        assert [x["name"] for x in c.get("/v1/concepts", headers=h).json()["data"]] == ["bo"]
        assert c.get("/v1/concepts/bo/export", headers=h).status_code == 200


# ---- 7. photos: a pixel cap the models can use, shrunk while decoding, bounded across requests --
def test_giant_photos_are_refused_from_their_header(serve_engine, tmp_path):
    """4 black 8000x8000 PNGs in one chat (under 1 MB) used to cost +1.9 GB: now 413 before decoding."""
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo")
    giant = data_url(png_header(8000, 8000), "image/png")
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": giant}}]
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", headers=h, json={"max_tokens": 2, "messages": [
            {"role": "user", "content": content}, {"role": "assistant", "content": "a"}] * 3 + [{"role": "user", "content": content}]})
        assert_error(r, 413, "more than 24,000,000 pixels")
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": giant}), 413, "pixels")
        photos = [("photos", (f"{i}.png", png_header(8000, 8000), "image/png")) for i in range(4)]
        assert_error(c.post("/v1/concepts", headers=h, data={"name": "rex"}, files=photos), 413, "pixels")
        assert c.get("/v1/jobs", headers=h).json()["data"] == []
        assert c.get("/healthz").status_code == 200


@pytest.mark.slow
def test_photos_are_shrunk_while_decoding():
    decoder = PhotoDecoder(max_pixels=24_000_000, max_side=1536, concurrent=2)
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(buf, "JPEG", quality=90)
    for blob in (buf.getvalue(), black_png(5000, 1000)):
        img, _ = decoder.open(blob)
        assert img.mode == "RGB" and max(img.size) <= 1536 and max(img.size) >= 1000, img.size
    small, _ = decoder.open(jpeg_bytes(size=40))
    assert small.size == (40, 40)  # small photos are untouched


MEASURE = r"""
import sys
from yollava.serve.photos import PhotoDecoder
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
blob = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS counter
base = status("VmRSS")
decoder = PhotoDecoder(24_000_000, 1536, 2)
kept = [decoder.open(blob)[0] for _ in range(4)]  # one chat with 4 photos keeps all 4
print((status("VmHWM") - base) / 1e6)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.slow
def test_four_big_photos_in_one_chat_stay_within_one_decode(tmp_path):
    """4 black 6000x4000 PNGs (70 KB each): decoding at full size kept ~480 MB; now one decode's worth."""
    path = tmp_path / "big.png"
    path.write_bytes(black_png(6000, 4000))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 200, f"peak RSS +{peak_mb:.0f} MB for 4 photos"


def test_photo_decoding_is_bounded_across_requests(serve_engine, tmp_path, monkeypatch):
    app = make_server(serve_engine, tmp_path / "home", max_decoding=1)
    h = add_user(app, "alice")
    active, peak, lock = [0], [0], threading.Lock()
    real = photos_module._shrunk  # the pixels are decoded in there, with the photo's memory reserved

    def slow_open(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(photos_module, "_shrunk", slow_open)
    body = {"max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": data_url(jpeg_bytes())}}]}]}
    with ServerThread(app) as s:
        results = []
        post = lambda: results.append(httpx.post(s.url + "/v1/chat/completions", headers=h, json=body, timeout=120).status_code)  # noqa: E731
        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert results == [200, 200, 200] and peak[0] == 1  # three chats at once, one photo decoded at a time
    busy = PhotoDecoder(24_000_000, 1536, concurrent=1, timeout_s=0.1)
    assert busy.budget.acquire(1, 0.1)  # a photo of another request is being decoded
    with pytest.raises(APIError) as e:
        busy.open(jpeg_bytes())
    assert e.value.status == 503
    budget = PhotoDecoder(24_000_000, 1536, concurrent=2, timeout_s=0.1, max_bytes=30 * 2**20)
    assert budget.budget.acquire(20 * 2**20, 0.1)  # two decoders are free, but not the 18.5 MiB a 1.4 MP JPEG takes
    with pytest.raises(APIError) as e:
        budget.open(jpeg_bytes(size=1200))
    assert e.value.status == 503
    budget.budget.release(20 * 2**20)
    assert budget.open(jpeg_bytes(size=1200))[0].size == (1200, 1200)


# ---- 8. a removed user loses access at once, and nothing is written for them ----------------
def test_removed_or_revoked_user_is_refused_at_once(serve_engine, tmp_path):
    from typer.testing import CliRunner

    from yollava.cli.serve import app as cli

    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    alice, bob = add_user(app, "alice"), add_user(app, "bob")
    with TestClient(app) as c:
        assert c.get("/v1/me", headers=alice).status_code == 200  # the key is now verified (and remembered)
        assert c.get("/v1/me", headers=bob).status_code == 200
        assert CliRunner().invoke(cli, ["users", "rm", "alice", "--yes", "--home", str(home)]).exit_code == 0
        assert_error(c.get("/v1/me", headers=alice), 401)
        assert CliRunner().invoke(cli, ["users", "revoke", "bob", "--home", str(home)]).exit_code == 0
        assert_error(c.get("/v1/concepts", headers=bob), 401)


def test_nothing_is_written_for_a_user_removed_mid_request(serve_engine, tmp_path, monkeypatch):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    server = app.state.server
    meta, t = parts(serve_engine, tmp_path / "src")
    root = home / "users" / "1"
    with TestClient(app) as c:
        # an import that authenticated just before `users rm`: its files would re-create the folder
        h = add_user(app, "alice")
        real_save = imports_module.save_concept

        def save_after_removal(*a, **kw):
            remove_user_as_the_cli_does(home, "alice")
            return real_save(*a, **kw)

        monkeypatch.setattr(imports_module, "save_concept", save_after_removal)
        assert_error(import_zip(c, h, concept_zip(meta, t)), 401, "removed")
        assert not root.exists()
        monkeypatch.undo()

        # an upload whose user goes while its photos are checked: was IntegrityError (500)
        h = add_user(app, "bob")
        real_open = server.photos.open

        def open_then_remove(*a, **kw):
            out = real_open(*a, **kw)
            remove_user_as_the_cli_does(home, "bob")
            return out

        monkeypatch.setattr(server.photos, "open", open_then_remove)
        r = c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=[("photos", ("0.jpg", jpeg_bytes(), "image/jpeg"))])
        assert_error(r, 401, "removed")
        assert not (home / "users" / "2").exists() and server.db.list_jobs() == []
        assert c.get("/healthz").status_code == 200


@pytest.mark.slow
def test_training_job_of_a_removed_user_saves_nothing(serve_engine, tmp_path, monkeypatch):
    from yollava.personalize import ConceptPipeline

    home = tmp_path / "home"
    app = make_server(serve_engine, home, epochs=1)
    h = add_user(app, "alice")
    photos = [("photos", (f"{i}.jpg", jpeg_bytes((200, 10 * i, 20)), "image/jpeg")) for i in range(3)]
    real = ConceptPipeline.train

    def train_then_remove(*a, **kw):  # `users rm` lands between the last epoch and the save
        out = real(*a, **kw)
        remove_user_as_the_cli_does(home, "alice")
        return out

    monkeypatch.setattr(ConceptPipeline, "train", train_then_remove)
    with TestClient(app) as c:
        job = c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=photos).json()
        assert app.state.server.jobs.wait(job["id"], 60)
    assert not (home / "users" / "1").exists()

    # removed while training: the job stops soon and leaves nothing either
    monkeypatch.undo()
    app = make_server(serve_engine, home, epochs=100_000)
    h = add_user(app, "bob")
    with TestClient(app) as c:
        job = c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=photos).json()
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job['id']}", headers=h).json()["progress"].get("step", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        remove_user_as_the_cli_does(home, "bob")
        assert app.state.server.jobs.wait(job["id"], 60)
    assert not (home / "users" / "2").exists()


# ---- 9. quotas, the k cap, the prompt length ---------------------------------------------
@pytest.mark.slow
def test_quotas_and_caps(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home, max_concepts_per_user=2, max_k=8, max_meta_bytes=8192, max_prompt_tokens=200, max_chat_concepts=3)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    folder = home / "users" / "1" / "concepts"
    put_concept(serve_engine, folder, "anna")
    photos = [("photos", ("0.jpg", jpeg_bytes(), "image/jpeg"))]
    with TestClient(app) as c:
        assert import_zip(c, h, concept_zip(meta, t)).status_code == 201  # 2 of 2
        before = snapshot(home)
        err = assert_error(import_zip(c, h, concept_zip(meta, t), name="rex"), 429, "the most this server allows")
        assert err["code"] == "concept_quota_exceeded"
        assert_error(c.post("/v1/concepts", headers=h, data={"name": "rex"}, files=photos), 429, "delete one")
        assert snapshot(home) == before
        assert import_zip(c, h, concept_zip(meta, t), overwrite="true").status_code == 201  # replacing adds nothing

        big_meta, big_t = parts(serve_engine, tmp_path / "big", name="big", k=9)
        assert_error(import_zip(c, h, concept_zip(big_meta, big_t, stem="big"), overwrite="true", name="bo"), 422, "at most 8 are allowed")
        assert_error(import_zip(c, h, concept_zip({**meta, "pad": "x" * 9000}, t), overwrite="true"), 413, "larger than 8,192")

        # a concept an older server let in with a huge k: its prompt is refused, the model is not held
        put_concept(serve_engine, folder, "bo", k=300)
        assert_error(chat(c, h, "What is <bo>?"), 422, "at most 200")
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": data_url(jpeg_bytes())}), 422, "prompt")
        assert_error(chat(c, h, "hi", concepts=["a", "b", "c", "d"]), 422, "at most 3 concepts")
        assert chat(c, h, "What is <anna>?").status_code == 200

    # storage: a quota just above what the user holds now
    used = sum(p.stat().st_size for p in (home / "users" / "1").rglob("*") if p.is_file())
    app = make_server(serve_engine, home, max_storage_bytes_per_user=used + 100)
    with TestClient(app) as c:
        before = snapshot(home)
        err = assert_error(c.post("/v1/concepts", headers=h, data={"name": "rex"}, files=[("photos", ("0.jpg", jpeg_bytes(size=64), "image/jpeg"))]), 429, "delete a concept")
        assert err["code"] == "storage_quota_exceeded"
        assert snapshot(home) == before and app.state.server.db.list_jobs() == []


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_refused(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)  # the tiny model's context is 512 tokens
    h = add_user(app, "alice")
    put_concept(serve_engine, home / "users" / "1" / "concepts", "bo", k=600)
    put_concept(serve_engine, home / "users" / "1" / "concepts", "anna", k=480)
    with TestClient(app) as c:
        assert_error(chat(c, h, "What is <bo>?"), 422, "context of 512 tokens")
        r = chat(c, h, "What is <anna>?", max_tokens=1000)  # fits, but the answer must stop at the context's end
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["total_tokens"] <= 512
        assert c.get("/healthz").status_code == 200


# ---- 10. no server path in any message ----------------------------------------------------
@pytest.mark.slow
def test_error_messages_name_no_server_path(serve_engine, tiny_model_dirs, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    server = app.state.server
    meta, t = parts(serve_engine, tmp_path / "src")
    other = YoLLaVA(load_model(str(tiny_model_dirs["llava_other"])))
    other_meta, other_t = parts(other, tmp_path / "other", name="rex")
    folder = home / "users" / "1" / "concepts"
    put_concept(serve_engine, folder, "gone")
    (folder / "gone.safetensors").unlink()
    tampered = concept_zip(json.dumps(meta).encode(), {**t, "input_rows": t["input_rows"] + 1})
    with TestClient(app) as c:
        messages = [
            assert_error(import_zip(c, h, concept_zip(other_meta, other_t, stem="rex")), 409, "trained for base model")["message"],
            assert_error(import_zip(c, h, tampered, name="bo2"), 422, "hash")["message"],
            assert_error(chat(c, h, "What is <gone>?"), 422, "damaged")["message"],
            assert_error(chat(c, h, "What is <nope>?"), 404)["message"],
        ]
        job = server.db.add_job(server.db.get_user("alice"), "bo", {}, 1, False)
        server.db.update_job(job, status="failed", error=f"training failed: cannot read {folder.parent / 'jobs' / job / 'photos' / 'photo-00.jpg'}")
        messages.append(c.get(f"/v1/jobs/{job}", headers=h).json()["error"])
        assert "photo-00.jpg" in messages[-1]
    forbidden = [str(home), str(tmp_path), str(tiny_model_dirs["llava"]), str(Path.home()), "users/1"]
    for message in messages:
        assert not [f for f in forbidden if f in message], message


@pytest.mark.slow
def test_limits_are_set_from_serve_flags(tmp_path):
    from typer.testing import CliRunner

    from yollava.cli.serve import app as cli
    from yollava.serve.config import limits_from_flags

    limits = limits_from_flags(max_concepts=5, max_storage_mb=2, max_k=8, max_meta_kb=16, max_megapixels=12.5,
                               max_photo_side=1024, max_decoding=1, max_prompt_tokens=999, max_import_mb=3, max_photos=None)
    assert (limits.max_concepts_per_user, limits.max_storage_bytes_per_user, limits.max_k, limits.max_meta_bytes) == (5, 2 << 20, 8, 16384)
    assert (limits.max_pixels, limits.max_photo_side, limits.max_decoding, limits.max_prompt_tokens) == (12_500_000, 1024, 1, 999)
    assert limits.max_import_bytes == 3 << 20 and limits.max_photos == 20
    drawing = limits_from_flags(max_images=2, max_images_per_hour=7)
    assert (drawing.max_images_per_request, drawing.max_images_per_user_per_hour) == (2, 7)
    for bad in ({"max_concepts": 0}, {"max_meta_kb": 4096}, {"max_images": 0}):
        with pytest.raises(ValueError):
            limits_from_flags(**bad)
    run = lambda *a: CliRunner().invoke(cli, ["serve", *a, "--home", str(tmp_path / "home")])  # noqa: E731
    r = run("--help")
    assert r.exit_code == 0 and all(f in r.output for f in ("--max-concepts", "--max-storage-mb", "--max-k", "--max-prompt-tokens"))
    assert "above --max-k 64" in run("--k", "100").output
    assert "must be positive" in run("--max-concepts", "0").output


# ==== round 3 (issue 28): six defects an adversarial probe found, and the smaller things it saw ==========
def timed_get(client, url: str) -> float:
    start = time.monotonic()
    assert client.get(url).status_code == 200
    return time.monotonic() - start


def healthz_while(url: str, request, tries: int = 2):
    """``request()``'s response, after checking that /healthz from another client answers within 0.5 s all the
    while it runs (probed at least 3 times). On a busy shared machine one probe can wait that long for a CPU, so
    the request is made again once before failing; a server that stalls on it (15 s before the fix) fails both."""
    seen = []
    for _ in range(tries):
        result: list = []
        with httpx.Client(timeout=5) as probe:
            timed_get(probe, url + "/healthz")  # connected before the request starts
            worker = threading.Thread(target=lambda: result.append(request()), daemon=True)
            worker.start()
            waits: list[float] = []
            while (worker.is_alive() or len(waits) < 3) and max(waits, default=0) < 0.5:
                try:
                    waits.append(timed_get(probe, url + "/healthz"))
                except httpx.TimeoutException:
                    waits.append(float("inf"))
        worker.join(30)
        seen.append([round(w, 2) for w in waits])
        if max(waits) < 0.5:
            assert result, "the request itself got no answer"
            return result[0]
    raise AssertionError(f"/healthz waited {max(seen[-1]):.1f} s while the request ran (probes, per try: {seen})")


# ---- 1. a JSON string of 40,000 escaped quotes stalled every client for 15 s (quadratic regex) -------
def test_nesting_check_is_linear_and_exact():
    from yollava import safejson

    for n in (20_000, 1_000_000):  # 40 KB and 2 MB of \" after an opening quote (was 15 s for 80 KB, 4x that for twice as much)
        start = time.monotonic()
        assert safejson.nesting_depth('["' + '\\"' * n) == 1
        assert time.monotonic() - start < 1, f"{time.monotonic() - start:.1f} s for {2 * n:,} bytes"
    json_shape = safejson.json_shape
    assert json_shape('{"a": "[[[\\"{{", "b": [1, [2, {"c": "]]"}]]}') == (4, 4)
    assert json_shape('["\\\\", [[1]]]') == (3, 2)  # an escaped backslash ends the string: the brackets count
    assert json_shape('["a\\"[[[", 1]') == (1, 2)  # an escaped quote does not: they do not
    with pytest.raises(safejson.UnsafeJSONError, match="more than 100 values"):
        safejson.loads("[" + "0," * 200 + "0]", max_values=100)


def test_hostile_json_string_does_not_stall_the_server(serve_engine, tmp_path):
    app = make_server(serve_engine, tmp_path / "home")
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    hostile = '["' + '\\"' * 40_000  # 80 KB: 400 after 15.4 s, /healthz of another client waited 15.0 s
    bad_meta = ('{"name": "bo", "x": ["' + '\\"' * 30_000).encode()  # 60 KB of metadata: 8.2 s
    with ServerThread(app) as s:
        assert httpx.get(s.url + "/v1/me", headers=h, timeout=30).status_code == 200  # the key is checked (scrypt) once
        post = lambda: httpx.post(s.url + "/v1/chat/completions", headers={**h, "Content-Type": "application/json"},  # noqa: E731
                                  content=hostile, timeout=30)
        assert_error(healthz_while(s.url, post), 400, "not valid JSON")
        upload = lambda: httpx.post(s.url + "/v1/concepts/import", headers=h, timeout=30,  # noqa: E731
                                    files={"file": ("bo.zip", concept_zip(bad_meta, t), "application/zip")})
        assert_error(healthz_while(s.url, upload), 422, "not valid JSON")


# ---- 2. finite float64 rows of 1e300: infinite as float32, every later request a 500 -----------------
def test_rows_too_large_for_the_model_are_refused(serve_engine, tmp_path):
    from safetensors.torch import save_file

    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    huge = {"input_rows": t["input_rows"].double(), "output_row": t["output_row"].double()}
    huge["input_rows"][1, 0] = 1e300
    folder = home / "users" / "1" / "concepts"  # as the old server stored it after a 201
    put_concept(serve_engine, folder, "big")
    save_file(huge, str(folder / "big.safetensors"))
    on_disk = json.loads((folder / "big.json").read_text())
    on_disk["tensors_sha256"] = hashlib.sha256((folder / "big.safetensors").read_bytes()).hexdigest()
    (folder / "big.json").write_text(json.dumps(on_disk))
    put_concept(serve_engine, folder, "anna")
    photo = data_url(jpeg_bytes())
    with TestClient(app) as c:
        before = snapshot(home)
        assert_error(import_zip(c, h, concept_zip(meta, huge)), 422, "magnitude 1e+300")
        assert snapshot(home) == before
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": ["big"], "image": photo, "mode": "yollava"}), 422, "magnitude")
        r = c.post("/v1/recognize", headers=h, json={"image": photo, "strategy": "all", "mode": "yollava"})
        assert r.status_code == 200, r.text
        assert [x["concept"] for x in r.json()["checked"]] == ["anna"]  # the bad file is left out, not a 500
        assert_error(chat(c, h, "What is <big>?"), 422, "magnitude")
        listed = {x["name"]: x for x in c.get("/v1/concepts", headers=h).json()["data"]}
        assert listed["anna"]["status"] == "ready"
        # values up to the bound still work everywhere, in float64 too
        edge = {"input_rows": torch.full_like(t["input_rows"], 100.0).double(), "output_row": torch.full_like(t["output_row"], -100.0).double()}
        assert import_zip(c, h, concept_zip(meta, edge), name="edge").status_code == 201
        assert c.post("/v1/recognize", headers=h, json={"concepts": ["edge"], "image": photo, "mode": "yollava"}).status_code == 200
        assert chat(c, h, "What is <edge>?").status_code == 200


# ---- 3. temperature or top_p of 1e-300: "probability tensor contains inf/nan" (500) -------------------
def test_sampling_parameters_at_the_edges(serve_engine, tmp_path):
    from yollava.engine.model import _sample

    logits = torch.tensor([1.0, 3.0, -2.0, 2.9])
    gen = torch.Generator().manual_seed(0)
    for temperature, top_p in ((1e-300, 1.0), (1e-6, 1.0), (1.0, 1e-300), (1.0, 0.0), (1e-300, 1e-300)):
        assert _sample(logits, temperature, top_p, gen) == 1, (temperature, top_p)  # greedy, not NaN
    app = make_server(serve_engine, tmp_path / "home")
    h = add_user(app, "alice")
    with TestClient(app) as c:
        greedy = chat(c, h, "hello", max_tokens=4).json()["choices"][0]["message"]["content"]
        for options in ({"temperature": 1e-300}, {"temperature": 1.0, "top_p": 1e-300}, {"temperature": 0.5, "top_p": 0}, {"top_p": 1e-300}):
            r = chat(c, h, "hello", max_tokens=4, seed=1, **options)
            assert r.status_code == 200, (options, r.text)
            assert r.json()["choices"][0]["message"]["content"] == greedy, options
        for options, param in (({"temperature": 2.5}, "temperature"), ({"temperature": -0.1}, "temperature"), ({"top_p": 1.5}, "top_p"),
                               ({"top_p": -1e-9}, "top_p"), ({"seed": 2**64}, "seed"), ({"seed": -(2**63) - 1}, "seed")):
            assert assert_error(chat(c, h, "hello", **options), 422, param)["param"] == param, options
        assert chat(c, h, "hello", temperature=2, top_p=1, seed=2**64 - 1).status_code == 200


# ---- 4. a 50 KB WebP declaring 24 MP took +275 MB to decode; 16 requests +1,161 MB, kept for good ------
# a lossless 6000x4000 WebP of one grey (38 bytes): Image.new("RGB", (6000, 4000), (30, 30, 30)).save(f, "WEBP", lossless=True, method=0)
WEBP_24MP = bytes.fromhex("524946461e000000574542505650384c110000002f6fd7e70307508f7ad4a3ff8188e87f0000")
#: the memory the README's limits table gives photos being decoded at once (Limits.max_decode_bytes)
DECODE_BUDGET_MIB = 400


def _decode_memory(conn, photos: list[bytes]) -> None:
    """In a child process: decode ``photos`` at once, one thread each, through a decoder made as the server
    makes it; send back (peak RSS growth, RSS growth once the photos are freed), in MB."""
    try:
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

        limits = Limits()
        decoder = PhotoDecoder(limits.max_pixels, limits.max_photo_side, limits.max_decoding)  # as the server makes it
        small = io.BytesIO()
        Image.new("RGB", (64, 64)).save(small, "WEBP", lossless=True)
        decoder.open(small.getvalue())  # warm up the decoder's own tables
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
        base = status("VmRSS")
        kept = []
        threads = [threading.Thread(target=lambda b=b: kept.append(decoder.open(b)[0])) for b in photos]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        peak = status("VmHWM") - base
        kept.clear()
        conn.send((peak / 1e6, (status("VmRSS") - base) / 1e6))
    except BaseException as e:  # noqa: BLE001
        conn.send(repr(e))


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_photo_decoding_memory_stays_within_the_documented_bound():
    """Two 24 MP WebPs decoded at once, as two requests would (each took +388 MB: both together +776 MB): the
    peak stays within the decoding budget the README states (max_decode_bytes: 400 MiB), and the memory goes
    back afterwards. Measured in a child process (forked: no second start-up of torch)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_decode_memory, args=(there, [WEBP_24MP, WEBP_24MP]))
    child.start()
    try:
        assert here.poll(60), "the child did not answer within 60 s"
        got = here.recv()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert isinstance(got, tuple), got
    peak_mb, after_mb = got
    bound_mb = DECODE_BUDGET_MIB * 2**20 / 1e6 + 2 * 1536 * 1025 * 4 / 1e6 + 25  # the budget, the 2 photos kept, slack
    assert peak_mb < bound_mb, f"peak RSS +{peak_mb:.0f} MB decoding 2 photos at once (bound {bound_mb:.0f} MB)"
    assert after_mb < 40, f"RSS stayed +{after_mb:.0f} MB after the photos were freed"


def test_photo_decoding_budget():
    from yollava.serve.photos import decode_cost

    decoder = PhotoDecoder(24_000_000, 1536, concurrent=2)
    assert decoder.budget.max_bytes == Limits().max_decode_bytes == DECODE_BUDGET_MIB * 2**20  # the server's default, as documented
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (30, 30, 30)).save(buf, "WEBP", lossless=True, method=0)
    img, fmt = decoder.open(buf.getvalue())
    assert (fmt, img.width, img.mode) == ("WEBP", 1536, "RGB")
    assert decoder.budget.peak == decode_cost("WEBP", (3000, 2000), 1536) and decoder.budget.used == 0
    small = PhotoDecoder(24_000_000, 1536, concurrent=2, max_bytes=200 * 2**20)
    assert decode_cost("PNG", (6000, 4000), 1536) < 200 * 2**20 < decode_cost("WEBP", (6000, 4000), 1536)
    with pytest.raises(APIError) as e:
        small.open(WEBP_24MP)  # needs ~390 MiB: refused before anything is decoded
    assert e.value.status == 413 and "more than the 200 MiB" in e.value.message and small.budget.peak == 0
    assert small.open(black_png(3000, 2000))[0].width == 1536
    header_only = WEBP_24MP[:30]  # 12000x12000 declared: refused from the header, before Pillow's decoder allocates it
    big = header_only[:21] + ((12000 - 1) | ((12000 - 1) << 14) | (0x1 << 28)).to_bytes(4, "little") + header_only[25:]
    with pytest.raises(APIError) as e:
        decoder.open(big)
    assert e.value.status == 413 and "12000x12000" in e.value.message


# (and a smaller thing: a photo that is not one was "cannot identify image file <_io.BytesIO object at 0x7f...>")
def test_image_errors_name_no_python_object(serve_engine, tmp_path):
    app = make_server(serve_engine, tmp_path / "home")
    h = add_user(app, "alice")
    jpeg = jpeg_bytes(size=64)
    with TestClient(app) as c:
        for blob in (b"this is not a photo", jpeg[: len(jpeg) // 2], b"RIFF\x10\x00\x00\x00WEBPVP8X" + bytes(8)):
            messages = [
                assert_error(c.post("/v1/recognize", headers=h, json={"image": data_url(blob)}), 422, "not a readable image")["message"],
                assert_error(chat(c, h, [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": data_url(blob)}}]),
                             422, "not a readable image")["message"],
                assert_error(c.post("/v1/concepts", headers=h, data={"name": "bo"}, files=[("photos", ("0.jpg", blob, "image/jpeg"))]),
                             422, "not a readable image")["message"],
            ]
            for m in messages:
                assert " at 0x" not in m and "BytesIO" not in m and "Error:" not in m, m


# ---- 5. an export held the server's folders: "model_id": "<dir>/tinyllava", "index_dir": "<dir>/pool" ----
def test_export_names_the_model_and_no_server_path(serve_engine, tiny_model_dirs, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    folder = home / "users" / "1" / "concepts"
    put_concept(serve_engine, folder, "bo")
    meta = json.loads((folder / "bo.json").read_text())
    meta["data"] = {"pool": {"index_dir": str(home / "pool"), "size": 3}, "model_fingerprint": meta["base_model"]}
    meta["recipe"] = {"name": "fast", "data": {"pool_dirs": [str(tmp_path / "photos" / "pool")]}}
    (folder / "bo.json").write_text(json.dumps(meta))
    assert str(tiny_model_dirs["llava"]) in meta["base_model"]["model_id"]  # the server's model is a folder
    forbidden = [str(tmp_path), str(home), str(tiny_model_dirs["llava"]), str(Path.home()), str(tiny_model_dirs["llava"].parent)]
    with TestClient(app) as c:
        r = c.get("/v1/concepts/bo/export", headers=h)
        assert r.status_code == 200
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            text = zf.read("bo.json").decode()
        exported = json.loads(text)
        assert not [f for f in forbidden if f in text], text
        assert exported["base_model"]["model_id"] == tiny_model_dirs["llava"].name  # named, and fingerprinted
        assert {k: v for k, v in exported["base_model"].items() if k != "model_id"} == {k: v for k, v in meta["base_model"].items() if k != "model_id"}
        assert exported["data"]["pool"]["index_dir"] == "pool"
        view = c.get("/v1/concepts/bo", headers=h).text
        assert not [f for f in forbidden if f in view], view
        r = import_zip(c, h, r.content, name="bo2")  # the export still imports (the fingerprint decides)
        assert r.status_code == 201, r.text


# ---- 6. a concept whose .safetensors is gone: "ready" in GET, 500 on export ---------------------------
def test_damaged_concept_folder_is_listed_and_every_endpoint_is_4xx(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    folder = home / "users" / "1" / "concepts"
    for name in ("bo", "anna", "rex"):
        put_concept(serve_engine, folder, name)
    (folder / "bo.safetensors").unlink()
    (folder / "rex.safetensors").write_bytes((folder / "rex.safetensors").read_bytes()[:-8] + b"garbage!")  # hash no longer matches
    photo = data_url(jpeg_bytes())
    with TestClient(app) as c:
        listed = {x["name"]: x for x in c.get("/v1/concepts", headers=h).json()["data"]}
        assert listed["anna"]["status"] == "ready"
        assert listed["bo"]["status"] == "unreadable" and "damaged" in listed["bo"]["error"], listed["bo"]
        got = c.get("/v1/concepts/bo", headers=h)
        assert got.status_code == 200 and got.json()["status"] == "unreadable" and "bo.safetensors" in got.json()["error"]
        assert_error(c.get("/v1/concepts/bo/export", headers=h), 422, "damaged")
        assert_error(c.get("/v1/concepts/rex/export", headers=h), 422, "hash")
        assert_error(chat(c, h, "What is <bo>?"), 422, "damaged")
        assert_error(c.post("/v1/recognize", headers=h, json={"concepts": ["bo"], "image": photo}), 422, "damaged")
        assert c.post("/v1/recognize", headers=h, json={"image": photo, "strategy": "all"}).status_code == 200
        assert c.get("/v1/concepts/anna/export", headers=h).status_code == 200
        assert c.delete("/v1/concepts/bo", headers=h).status_code == 200
        assert not (folder / "bo.json").exists()


# ---- smaller things the probe saw ------------------------------------------------------------------
def test_special_tokens_typed_in_chat_are_text(serve_engine, tiny_model_dirs, tmp_path):
    """``</s>`` typed in a question became the end-of-sequence token (and ``<s>``, ``<unk>``, ``<pad>`` theirs)."""
    typed = "Is this the end </s> or <s> the <unk> start <pad>?"
    qwen = {"</s>": "<|im_end|>", "<s>": "<|im_start|>", "<unk>": "<|endoftext|>", "<pad>": "<|vision_start|>"}
    for engine in (serve_engine, YoLLaVA(load_model(str(tiny_model_dirs["qwen2_vl"])))):
        tok = engine.adapter.tokenizer
        special = set(tok.all_special_ids) | {i for i, a in tok.added_tokens_decoder.items() if a.special}
        text = typed
        if engine is not serve_engine:
            for a, b in qwen.items():
                text = text.replace(a, b)
        history = [("user", "hello", None), ("assistant", "hi", None)]
        plain = engine.encode_conversation([*history, ("user", "Is this the end?", None)])
        typed_enc = engine.encode_conversation([*history, ("user", text, None)])
        template = [i for i in plain.input_ids if i in special]
        assert template, "the template's own markers are special tokens"
        assert [i for i in typed_enc.input_ids if i in special] == template  # nothing typed became one
        asked = engine.encode("What is " + text)
        assert not [i for i in asked.input_ids if i in special and i not in engine.encode("What is").input_ids]
    app = make_server(serve_engine, tmp_path / "home")
    h = add_user(app, "alice")
    with TestClient(app) as c:
        r = chat(c, h, typed)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == len(serve_engine.encode_conversation([("user", typed, None)]).input_ids)


def test_security_headers_and_opt_in_docs(serve_engine, tmp_path):
    app = make_server(serve_engine, tmp_path / "home", max_request_bytes=1024)  # the 2 KB post below: BodyLimit's own 413
    h = add_user(app, "alice")
    with TestClient(app) as c:
        for r in (c.get("/"), c.get("/healthz"), c.get("/v1/me", headers=h), c.get("/v1/me"), c.get("/no/such/page"),
                  c.post("/v1/recognize", headers=h, content=b"x" * 2048)):
            csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
            assert csp["frame-ancestors"] == ["'none'"] and csp["connect-src"] == ["'self'"], csp
            assert {"'self'", "'unsafe-inline'"} <= set(csp["script-src"]) and {"'self'", "'unsafe-inline'"} <= set(csp["style-src"])
            assert {"data:", "blob:"} <= set(csp["img-src"]) and csp["object-src"] == ["'none'"]
            assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff", r.url
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert_error(c.get(path), 404)
    train, data = tiny_recipe()
    with TestClient(create_app(ServerConfig(model="tiny", home=tmp_path / "home2", train=train, data=data, docs=True), serve_engine)) as c:
        assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200


def test_database_file_is_private(tmp_path):
    home = tmp_path / "home"
    db = Database(home / "server.db")
    db.add_user("alice")
    for p in home.glob("server.db*"):
        assert p.stat().st_mode & 0o777 == 0o600, (p.name, oct(p.stat().st_mode))
    db.close()
    (home / "server.db").chmod(0o644)  # made by an older version
    Database(home / "server.db").close()
    assert (home / "server.db").stat().st_mode & 0o777 == 0o600


def test_no_latent_tokens_and_windows_device_names_are_refused(serve_engine, tmp_path):
    home = tmp_path / "home"
    app = make_server(serve_engine, home)
    h = add_user(app, "alice")
    meta, t = parts(serve_engine, tmp_path / "src")
    k0 = {"input_rows": t["input_rows"][:1], "output_row": t["output_row"]}
    photos = [("photos", ("0.jpg", jpeg_bytes(), "image/jpeg"))]
    with TestClient(app) as c:
        before = snapshot(home)
        assert_error(import_zip(c, h, concept_zip({**meta, "k": 0}, k0)), 422, "k must be a whole number >= 1")
        assert_error(import_zip(c, h, concept_zip({k: v for k, v in meta.items() if k != "k"}, k0)), 422, "k = 0")
        for name in ("CON", "con", "Nul", "COM1", "LPT9", "aux", "PRN"):
            assert_error(import_zip(c, h, concept_zip(meta, t), name=name), 422, "Windows")
            assert_error(import_zip(c, h, concept_zip({**meta, "name": name}, t, stem=name)), 422, "Windows")
            assert_error(c.post("/v1/concepts", headers=h, data={"name": name}, files=photos), 422, "Windows")
        assert snapshot(home) == before
        assert import_zip(c, h, concept_zip(meta, t), name="CONSOLE").status_code == 201  # only the device names themselves
