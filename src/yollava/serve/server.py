"""What one server process holds (:class:`Server`), and the request-body size limit (:class:`BodyLimit`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
from collections import defaultdict

import anyio

from ..engine import YoLLaVA
from .config import ServerConfig
from .db import Database, User
from .errors import APIError, error_body
from .host import ModelHost
from .jobs import JobManager
from .photos import PhotoDecoder
from .redact import server_redactor
from .spaces import UserSpace
from .who_service import WhoService


class _BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit:,} bytes", code="request_too_large")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes: by Content-Length up front, and by counting when it is absent."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    body = json.dumps(error_body(413, f"request body is larger than {self.limit:,} bytes", code="request_too_large")).encode()
                    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                    return
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return msg

        return await self.app(scope, counted, send)


class Server:
    """Everything one server process holds: settings, database, model, jobs, generation slots."""

    def __init__(self, config: ServerConfig, engine: YoLLaVA | None = None):
        self.config = config
        if not config.home.exists():
            config.home.mkdir(parents=True)
            config.home.chmod(0o700)  # users' concepts and the key hashes: nobody else's business
        for leftover in config.home.glob("users/*/imports"):  # half-done imports of a run that crashed
            shutil.rmtree(leftover, ignore_errors=True)
        limits = config.limits
        if config.train.k > limits.max_k:
            raise ValueError(f"the training recipe's k ({config.train.k}) is above the server's max_k ({limits.max_k})")
        self.db = Database(config.home / "server.db")
        if engine is None:
            engine = YoLLaVA.from_pretrained(config.model, concepts_dir=config.home / "unused-concepts")
        self.host = ModelHost(engine)
        self.redact = server_redactor(config.home, config.model, self.host.fingerprint.get("model_id"))
        self.jobs = JobManager(self.host, self.db, config)
        self.jobs.redact = self.redact
        self.who = WhoService(self)
        self.jobs.who = self.who
        self.limits = limits
        self.model_name = config.served_model_name
        self.step_limiter = anyio.CapacityLimiter(limits.max_concurrent_generations + 2)
        self.photos = PhotoDecoder(limits.max_pixels, limits.max_photo_side, limits.max_decoding, limits.queue_timeout_s,
                                   max_bytes=limits.max_decode_bytes)
        self._slots: asyncio.Semaphore | None = None
        self._user_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)

    def space(self, user: User) -> UserSpace:
        return UserSpace(self.config.home, user.id)

    def space_for(self, user_id: int) -> UserSpace:
        return UserSpace(self.config.home, user_id)

    def user_lock(self, user_id: int) -> threading.Lock:
        """Held while a user's quotas are checked and a concept or job is added (before any concept lock)."""
        return self._user_locks[user_id]

    @contextlib.asynccontextmanager
    async def generation_slot(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrent_generations)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.queue_timeout_s)
        except TimeoutError:
            raise APIError(503, f"the server is busy: no generation slot within {self.limits.queue_timeout_s:.0f}s; retry later", code="server_busy") from None
        try:
            yield
        finally:
            self._slots.release()
