"""What one server process holds (:class:`Server`), and the request-body size limit (:class:`BodyLimit`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
from collections import defaultdict

import anyio

from ..engine import Engine
from .config import ServerConfig
from .db import Database, User
from .errors import APIError, error_body
from .host import ModelHost
from .jobs import JobManager
from .quotas import HourlyQuota
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


#: a single self-contained page: its own scripts and styles (inline or from this server), photos as data:
#: and blob: URLs, requests only to this server; no frames, plugins, forms or base URLs elsewhere
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: the API documentation page (only served with ``ServerConfig(docs=True)``) loads Swagger UI from its CDN
DOCS_CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
                                "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


class SecurityHeaders:
    """Every response gets :data:`SECURITY_HEADERS` (a handler's own value of one of them wins): the page
    cannot be framed by another site (clickjacking), and runs only its own code."""

    def __init__(self, app, docs_paths: tuple[str, ...] = ()):
        self.app, self.docs_paths = app, docs_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = dict(SECURITY_HEADERS)
        if scope.get("path") in self.docs_paths:
            extra[b"content-security-policy"] = DOCS_CONTENT_SECURITY_POLICY.encode()

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *((k, v) for k, v in extra.items() if k not in have)]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class Server:
    """Everything one server process holds: settings, database, model, jobs, generation slots."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None):
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
            engine = Engine.from_pretrained(config.model, concepts_dir=config.home / "unused-concepts")
        self.host = ModelHost(engine)
        self.redact = server_redactor(config.home, config.model, self.host.fingerprint.get("model_id"))
        self.jobs = JobManager(self.host, self.db, config)
        self.jobs.redact = self.redact
        self.who = WhoService(self)
        self.jobs.who = self.who
        self.limits = limits
        self.image_quota = HourlyQuota(limits.max_images_per_user_per_hour)  # pictures drawn per user per hour
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
