"""Helpers for tests and benchmarks: a real uvicorn server in a thread, tiny recipes, photo bytes."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

from PIL import Image

from ..recipes import DataConfig
from ..train import TrainConfig


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tiny_recipe(epochs: int = 1, k: int = 2) -> tuple[TrainConfig, DataConfig]:
    """A recipe that trains in seconds: no conversations, no negatives (so no photo pool)."""
    return TrainConfig(epochs=epochs, k=k), DataConfig(conversations=False, n_easy_negatives=0, hard_negatives=False)


def jpeg_bytes(color=(200, 20, 20), size: int = 40, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def data_url(blob: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(blob).decode()


class ServerThread:
    """``with ServerThread(app) as s: httpx.get(s.url + "/healthz")``: uvicorn on a free loopback port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread; on a busy shared machine two threads can be
    10x slower (OpenMP waits for a descheduled partner). Restores the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
