"""A server process killed (SIGKILL) mid-training: the next one resumes the job from its last epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from typer.testing import CliRunner  # noqa: E402

from yollava.cli.serve import app as serve_cli  # noqa: E402
from yollava.serve.testing import free_port, jpeg_bytes  # noqa: E402

EPOCHS = 25


def start_server(model, home, port, log):
    cmd = [sys.executable, "-m", "yollava.serve", "serve", "--model", str(model), "--home", str(home), "--port", str(port),
           "--epochs", str(EPOCHS), "--k", "2", "--no-conversations", "--n-easy", "0", "--no-hard-negatives", "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one tiny model needs no thread pool (and the CI box is shared)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_killed_server_resumes_training(tiny_model_dirs, tmp_path):
    home, model = tmp_path / "home", tiny_model_dirs["llava"]
    r = CliRunner().invoke(serve_cli, ["users", "add", "alice", "--home", str(home)])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("yk-")
    h = {"Authorization": f"Bearer {key}"}
    log = open(tmp_path / "server.log", "wb")
    proc, url = start_server(model, home, free_port(), log)
    try:
        files = [("photos", (f"{i}.jpg", jpeg_bytes((200, 10 * i, 0)), "image/jpeg")) for i in range(3)]
        job = httpx.post(url + "/v1/concepts", headers=h, data={"name": "bo"}, files=files, timeout=30).json()
        deadline = time.monotonic() + 600  # building the data can take minutes on a loaded 2-core box (120 s was seen to run out)
        while (progress := httpx.get(f"{url}/v1/jobs/{job['id']}", headers=h, timeout=30).json()["progress"]).get("epoch", 0) < 2:
            assert time.monotonic() < deadline, progress
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no shutdown handler runs: a crash
        proc.wait(30)
        assert progress["epoch"] < EPOCHS

        proc, url = start_server(model, home, free_port(), log)
        deadline = time.monotonic() + 300
        while (j := httpx.get(f"{url}/v1/jobs/{job['id']}", headers=h, timeout=30).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, j
            time.sleep(0.2)
        assert j["status"] == "succeeded", (j, (tmp_path / "server.log").read_text(errors="replace")[-3000:])
        assert j["resumed"] == 1 and j["progress"]["resumed_from_epoch"] >= 2
        assert j["progress"]["epoch"] == EPOCHS
        concept = httpx.get(f"{url}/v1/concepts/bo", headers=h, timeout=30).json()
        assert concept["status"] == "ready" and concept["recipe"]["train"]["epochs"] == EPOCHS
        r = httpx.post(f"{url}/v1/chat/completions", headers=h, timeout=60,
                       json={"messages": [{"role": "user", "content": "What is <bo>?"}], "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert not list((home / "users" / "1").glob("jobs/*"))  # its photos and checkpoints are gone
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
