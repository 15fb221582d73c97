"""The HTTP server: OpenAI-compatible chat, concept training jobs, recognition, users, a web page.

``create_app(config, engine=None)`` builds the FastAPI app; ``engine`` (a loaded :class:`YoLLaVA`) lets
tests and benchmarks share an already loaded model, otherwise ``config.model`` is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from ..concepts import list_concepts, read_meta
from ..engine import YoLLaVA
from ..errors import CorruptConceptError, UnknownConceptError, YollavaError
from ..who import who_prompt
from .bodies import read_json
from .config import ServerConfig
from .db import ACTIVE, Database, User
from .errors import APIError, checked_name, error_body, from_yollava, install_error_handlers
from .host import ChatSession, ModelHost
from .imports import import_concept
from .jobs import JobManager
from .openai_compat import (
    DONE,
    ChatRequest,
    RecognizeRequest,
    TextStream,
    chunk,
    completion,
    completion_id,
    message_parts,
    sse,
    usage_chunk,
)
from .photos import FORMATS, PhotoDecoder, decode_data_url
from .quotas import check_quotas, writing_for
from .redact import server_redactor
from .spaces import UserSpace
from .who_service import WhoService

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_END = object()


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
        self.photos = PhotoDecoder(limits.max_pixels, limits.max_photo_side, limits.max_decoding, limits.queue_timeout_s)
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


# ---- helpers -------------------------------------------------------------------------------
def concept_view(meta: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """The public form of a concept (``meta`` has passed the schema check of ``read_meta``)."""
    metrics = meta.get("metrics") or {}
    name = path.stem if path is not None else meta.get("name")
    return {
        "object": "concept",
        "name": name,
        "identifier": f"<{name}>",
        "status": "ready",
        "k": meta.get("k"),
        "recognition_threshold": meta.get("recognition_threshold", 0.5),
        "photos": len(meta.get("source_photos") or []),
        "best_epoch": metrics.get("best_epoch"),
        "holdout": metrics.get("holdout"),
        "recipe": meta.get("recipe"),
        "created": path.stat().st_mtime if path is not None and path.exists() else None,
        "recognition_ready": True,
        "conversation_ready": True,
        "visual": bool(meta.get("visual")),  # has a prototype and concept head (made before: recognised by the LLM only)
    }


def unreadable_view(name: str, error: str) -> dict[str, Any]:
    """A concept file that fails its checks: listed (so it can be deleted), never loaded."""
    return {"object": "concept", "name": name, "identifier": f"<{name}>", "status": "unreadable", "error": error}


async def _form(request: Request, max_files: int, max_fields: int = 16):
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise APIError(415, "send this request as multipart/form-data")
    try:
        return await request.form(max_files=max_files, max_fields=max_fields, max_part_size=64 * 1024)
    except APIError:
        raise
    except Exception as e:  # starlette's own multipart errors
        detail = getattr(e, "detail", None) or str(e)
        raise APIError(400, f"malformed multipart body ({detail})") from None


async def _read_upload(f: UploadFile, limit: int, label: str) -> bytes:
    if f.size is not None and f.size > limit:
        raise APIError(413, f"{label} is larger than {limit:,} bytes", code="file_too_large")
    data = await f.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, f"{label} is larger than {limit:,} bytes", code="file_too_large")
    return data


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


# ---- the app -------------------------------------------------------------------------------
def create_app(config: ServerConfig | None = None, engine: YoLLaVA | None = None) -> FastAPI:
    config = config or ServerConfig()
    server = Server(config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.jobs.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server.jobs.stop)

    app = FastAPI(title="yollava", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.server = server
    install_error_handlers(app, server.redact)
    app.add_middleware(BodyLimit, limit=config.limits.max_request_bytes)
    limits = config.limits

    async def current_user(request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (an admin makes keys with `yollava users add NAME`)",
                           code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        user = await anyio.to_thread.run_sync(server.db.authenticate, key.strip())
        if user is None:
            raise APIError(401, "invalid or revoked API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return user

    # ---- page, health, models --------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": server.model_name}

    @app.get("/v1/models")
    async def models(user: User = Depends(current_user)):
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0, "owned_by": "yollava"}]}

    @app.get("/v1/me")
    async def me(user: User = Depends(current_user)):
        return {"object": "user", "name": user.name, "model": server.model_name, "limits": {
            "max_photos": limits.max_photos, "max_photo_bytes": limits.max_photo_bytes, "max_pixels": limits.max_pixels,
            "max_tokens": limits.max_tokens_limit, "max_prompt_tokens": limits.max_prompt_tokens, "max_k": limits.max_k,
            "max_concepts": limits.max_concepts_per_user, "max_storage_bytes": limits.max_storage_bytes_per_user}}

    # ---- chat ------------------------------------------------------------------------------
    def _concepts_for(user: User, names: list[str], param: str) -> list[str]:
        space = server.space(user)
        for name in names:
            if not space.has_concept(name):
                job = server.jobs.active_job(user.id, name)
                if job is not None:
                    raise APIError(409, f"concept <{name}> is still being trained (job {job['id']}, {job['status']})", param=param, code="concept_not_ready")
                raise APIError(404, f"unknown concept <{name}>: you have no concept of that name (GET /v1/concepts lists yours)", param=param, code="concept_not_found")
        return names

    def _prepare_chat(user: User, req: ChatRequest):
        if req.n not in (None, 1):
            raise APIError(422, "only n=1 is supported", param="n")
        if len(req.messages) > limits.max_messages:
            raise APIError(413, f"at most {limits.max_messages} messages per request", param="messages")
        conversation, n_images, n_chars = [], 0, 0
        marker = server.host.image_marker
        for i, msg in enumerate(req.messages):
            text, urls = message_parts(msg, i)
            n_chars += len(text)
            if marker and marker in text:
                raise APIError(422, f"messages[{i}]: the text may not contain {marker!r} (send photos as image_url parts)", param=f"messages[{i}].content")
            if urls and msg.role != "user":
                raise APIError(422, f"messages[{i}]: only user messages can carry photos", param=f"messages[{i}].content")
            if len(urls) > 1:
                raise APIError(422, f"messages[{i}]: at most one photo per message", param=f"messages[{i}].content")
            image = None
            if urls:
                n_images += 1
                if n_images > limits.max_chat_images:
                    raise APIError(413, f"at most {limits.max_chat_images} photos per conversation", param="messages")
                blob = decode_data_url(urls[0], limits.max_photo_bytes, param=f"messages[{i}].content")
                image, _ = server.photos.open(blob, label=f"messages[{i}] photo", param=f"messages[{i}].content")
            role = "system" if msg.role == "developer" else msg.role
            conversation.append((role, text, image))
        if n_chars > limits.max_chat_chars:
            raise APIError(413, f"at most {limits.max_chat_chars:,} characters of text per request", param="messages")
        if len(req.concepts or []) > limits.max_chat_concepts:
            raise APIError(422, f"at most {limits.max_chat_concepts} concepts per request", param="concepts")
        extra = [checked_name(n, "concepts") for n in (req.concepts or [])]
        names = list(dict.fromkeys([*extra, *server.host.mentioned_concepts(" ".join(t for _, t, _ in conversation))]))
        if len(names) > limits.max_chat_concepts:
            raise APIError(422, f"at most {limits.max_chat_concepts} concepts per request ({len(names)} named)", param="messages")
        _concepts_for(user, names, "messages")
        found = []
        if not names and n_images and req.who is not False:  # a photo and no concept named: who is in it?
            last = max(i for i, (_, _, img) in enumerate(conversation) if img is not None)
            role, text, image = conversation[last]
            found = server.who.who(user.id, image).found[:3]
            hint, names = who_prompt(found)
            if hint:
                conversation[last] = (role, f"{hint} {text}", image)
        max_new = req.max_completion_tokens or req.max_tokens or limits.default_max_tokens
        if max_new > limits.max_tokens_limit:
            raise APIError(422, f"max_tokens may be at most {limits.max_tokens_limit}", param="max_tokens")
        engine = server.host.request_engine(server.space(user).concepts, names, limits.max_prompt_tokens)
        session = ChatSession(engine, conversation, names, [f.as_dict() for f in found])
        gen = session.stream(max_new, temperature=req.temperature or 0.0, top_p=req.top_p if req.top_p is not None else 1.0, seed=req.seed)
        return session, gen, max_new

    def _step(gen, engine):
        if engine.context_full:  # the model's context is full: the answer ends here
            return _END
        with server.host.lock:
            return next(gen, _END)

    async def step(gen, engine):
        try:
            return await anyio.to_thread.run_sync(_step, gen, engine, limiter=server.step_limiter)
        except YollavaError as e:
            raise from_yollava(e, param="messages") from None
        except ValueError as e:
            raise APIError(422, f"cannot build the prompt: {e}", param="messages") from None

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, user: User = Depends(current_user)):
        req = await read_json(request, ChatRequest, limits.max_json_depth)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 4:
            raise APIError(422, "at most 4 stop sequences", param="stop")
        cid, created = completion_id(), int(time.time())
        slot = server.generation_slot()
        await slot.__aenter__()
        released = False

        async def release():
            nonlocal released
            if not released:
                released = True
                await slot.__aexit__(None, None, None)

        try:
            try:
                engine, gen, max_new = await anyio.to_thread.run_sync(_prepare_chat, user, req)
            except YollavaError as e:
                raise from_yollava(e, param="messages") from None
            text = TextStream(stops)
            first = await step(gen, engine)  # prompt + first token now: prompt errors become 4xx, not a broken stream
        except BaseException:
            await release()
            raise

        def usage() -> dict:
            return {"prompt_tokens": engine.prompt_tokens, "completion_tokens": engine.completion_tokens,
                    "total_tokens": engine.prompt_tokens + engine.completion_tokens}

        def finish_reason() -> str:
            return "length" if not text.stopped and (engine.completion_tokens >= max_new or engine.context_full) else "stop"

        if not req.stream:
            try:
                pieces, piece = [], first
                while piece is not _END and not text.stopped:
                    pieces.append(text.feed(piece))
                    piece = await step(gen, engine)
                pieces.append(text.finish())
            finally:
                gen.close()
                await release()
            body = completion(cid, server.model_name, "".join(pieces), finish_reason(), usage())
            if engine.found:
                body["concepts_found"] = engine.found  # yollava extension: who was found in the photo
            return JSONResponse(body)

        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            try:
                first_chunk = chunk(cid, server.model_name, created, {"role": "assistant", "content": ""})
                if engine.found:  # yollava extension: who was found in the photo, in the first chunk
                    first_chunk = sse({**json.loads(first_chunk[len("data: "):]), "concepts_found": engine.found})
                yield first_chunk
                piece = first
                while piece is not _END and not text.stopped:
                    out = text.feed(piece)
                    if out:
                        yield chunk(cid, server.model_name, created, {"content": out})
                    piece = await step(gen, engine)
                out = text.finish()
                if out:
                    yield chunk(cid, server.model_name, created, {"content": out})
                yield chunk(cid, server.model_name, created, {}, finish_reason())
                if include_usage:
                    yield usage_chunk(cid, server.model_name, created, usage())
                yield DONE
            except APIError as e:
                yield sse(error_body(e.status, server.redact(e.message), e.type, e.param, e.code))
                yield DONE
            except Exception as e:  # after the headers are sent the status cannot change: say it in the stream
                log.exception("chat stream failed")
                yield sse(error_body(500, f"generation failed ({e.__class__.__name__})", "api_error"))
                yield DONE
            finally:
                gen.close()
                await release()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- recognition -----------------------------------------------------------------------
    @app.post("/v1/recognize")
    async def recognize(request: Request, user: User = Depends(current_user)):
        req = await read_json(request, RecognizeRequest, limits.max_json_depth)
        names = list(dict.fromkeys(checked_name(n, "concepts") for n in req.concepts)) if req.concepts is not None else None
        url = req.image.get("url") if isinstance(req.image, dict) else req.image

        def recognisable(names: list[str]) -> None:
            """404 for a name the user does not have; 409 for one whose concept head is not fitted yet."""
            sources = server.who.sources(user.id)
            for name in names:
                if name not in sources:
                    _concepts_for(user, [name], "concepts")

        def run():
            if names is not None:
                recognisable(names)  # before decoding: an unknown concept is cheap to report
            blob = decode_data_url(url, limits.max_photo_bytes, param="image")
            image, _ = server.photos.open(blob, label="image", param="image")
            # the model lock is taken only around language-model passes (concept heads need none of it)
            if names is None:
                return server.who.who(user.id, image, mode=req.mode, strategy=req.strategy, top_k=req.top_k, threshold=req.threshold)
            return server.who.recognize(user.id, names, image, mode=req.mode, threshold=req.threshold)

        async with server.generation_slot():
            try:
                results = await anyio.to_thread.run_sync(run, limiter=server.step_limiter)
            except YollavaError as e:
                raise from_yollava(e, param="concepts") from None
        if names is None:  # who is here: the concepts present, best first
            return {"object": "recognition", "model": server.model_name, "who": True, "strategy": results.strategy,
                    "concepts_total": results.n_concepts, "concepts_checked": len(results.checked),
                    "seconds": round(results.seconds.get("total", 0.0), 4),
                    "results": [f.as_dict() for f in results.found], "checked": [f.as_dict() for f in results.checked]}
        return {"object": "recognition", "model": server.model_name, "results": [f.as_dict() for f in results]}

    # ---- concepts --------------------------------------------------------------------------
    @app.post("/v1/concepts", status_code=202)
    async def create_concept(request: Request, user: User = Depends(current_user)):
        form = await _form(request, max_files=limits.max_photos + 8)
        name = form.get("name")
        if not isinstance(name, str) or not name.strip():
            raise APIError(422, "give the concept a name (form field 'name', e.g. bo)", param="name")
        name = checked_name(name.strip(" "))  # spaces around a typed name are dropped; "bo\n" is refused
        if name in server.host.reserved_tokens or f"<{name}>" in server.host.reserved_tokens:
            raise APIError(422, f"concept name {name!r} clashes with a special token of the model", param="name")
        category = form.get("category") or config.data.category
        if category not in ("object", "person"):
            raise APIError(422, "category must be 'object' or 'person'", param="category")
        overwrite = _truthy(form.get("overwrite", "false"))
        files = [f for key in ("photos", "photos[]", "photo", "files") for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not files:
            raise APIError(422, "upload 1 or more photos of the subject (form field 'photos'; 3-10 work best)", param="photos")
        if len(files) > limits.max_photos:
            raise APIError(413, f"at most {limits.max_photos} photos per concept ({len(files)} sent)", param="photos")
        space = server.space(user)

        def check(incoming: int) -> None:
            if space.has_concept(name) and not overwrite:
                raise APIError(409, f"you already have a concept <{name}> (delete it first, or send overwrite=true)", param="name", code="concept_exists")
            if server.jobs.active_job(user.id, name):
                raise APIError(409, f"<{name}> is already being trained", param="name", code="job_exists")
            if len(server.db.list_jobs(user.id, ACTIVE)) >= limits.max_jobs_per_user:
                raise APIError(429, f"you have {limits.max_jobs_per_user} training jobs queued or running; wait for one to finish", code="too_many_jobs")
            check_quotas(server, user.id, space, name, incoming)

        await anyio.to_thread.run_sync(check, sum(f.size or 0 for f in files))  # before reading the photos: cheap to report
        photos = []
        for i, f in enumerate(files):
            label = f"photo {i + 1} ({f.filename or 'unnamed'})"
            blob = await _read_upload(f, limits.max_photo_bytes, label)
            _, fmt = await anyio.to_thread.run_sync(lambda b=blob, lab=label: server.photos.open(b, label=lab, param="photos"))
            photos.append((blob, FORMATS[fmt]))

        def submit() -> dict:
            with server.user_lock(user.id), server.jobs.concept_lock(user.id, name):  # checked again: two uploads may race
                check(sum(len(b) for b, _ in photos))
                with writing_for(server, user.id, space):
                    return server.jobs.submit(user, name, photos, category, overwrite)

        job = await anyio.to_thread.run_sync(submit)
        return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @app.get("/v1/concepts")
    async def concepts_list(user: User = Depends(current_user)):
        space = server.space(user)

        def views() -> list[dict]:  # a bad file is listed as unreadable (so it can be deleted), never a 500
            return [unreadable_view(m["name"], server.redact(m["error"])) if "error" in m else concept_view(m, space.concepts / f"{m['name']}.json")
                    for m in list_concepts(space.concepts)]

        data = await anyio.to_thread.run_sync(views)
        ready = {d["name"] for d in data}
        for job in server.db.list_jobs(user.id, ACTIVE):
            if job["concept"] not in ready:
                view = server.jobs.view(job)
                data.append({"object": "concept", "name": job["concept"], "identifier": f"<{job['concept']}>", "status": "training",
                             "job": job["id"], "phase": view["phase"], "progress": view["progress"],
                             "recognition_ready": view["recognition_ready"], "conversation_ready": False})
        return {"object": "list", "data": data}

    @app.get("/v1/concepts/{name}")
    async def concept_get(name: str, user: User = Depends(current_user)):
        name = checked_name(name)
        space = server.space(user)
        try:
            meta = read_meta(space.concepts, name)
        except CorruptConceptError as e:
            return unreadable_view(name, server.redact(str(e)))
        except UnknownConceptError:
            job = server.jobs.active_job(user.id, name)
            if job:
                view = server.jobs.view(job)
                return {"object": "concept", "name": name, "identifier": f"<{name}>", "status": "training", "job": job["id"],
                        "phase": view["phase"], "progress": view["progress"], "recognition_ready": view["recognition_ready"],
                        "conversation_ready": False}
            raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found") from None
        return concept_view(meta, space.concepts / f"{name}.json")

    @app.delete("/v1/concepts/{name}")
    async def concept_delete(name: str, user: User = Depends(current_user)):
        name = checked_name(name)
        space = server.space(user)

        def run() -> bool:
            server.jobs.cancel_concept(user.id, name, wait=120)
            with server.jobs.concept_lock(user.id, name):
                found = space.remove_concept_files(name)
                jobs = server.db.list_jobs(user.id, concept=name)
                for job in jobs:
                    space.remove_job_dir(job["id"])
                server.db.delete_jobs(user.id, name)
                server.db.checkpoint()
                server.host.concepts.forget(space.concepts, name)
            return found or bool(jobs)

        if not await anyio.to_thread.run_sync(run):
            raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found")
        return {"object": "concept.deleted", "name": name, "deleted": True}

    @app.get("/v1/concepts/{name}/export")
    async def concept_export(name: str, user: User = Depends(current_user)):
        name = checked_name(name)
        space = server.space(user)

        def run() -> bytes:
            with server.jobs.concept_lock(user.id, name):
                if not space.has_concept(name):
                    raise APIError(404, f"unknown concept <{name}>", param="name", code="concept_not_found")
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for suffix in (".safetensors", ".json"):
                        zf.write(space.concepts / f"{name}{suffix}", f"{name}{suffix}")
                return buf.getvalue()

        blob = await anyio.to_thread.run_sync(run)
        return Response(blob, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})

    @app.post("/v1/concepts/import", status_code=201)
    async def concept_import(request: Request, user: User = Depends(current_user)):
        form = await _form(request, max_files=2)
        f = form.get("file")
        if not isinstance(f, UploadFile):
            raise APIError(422, "upload the concept as a zip in the form field 'file' (as GET /v1/concepts/NAME/export makes it)", param="file")
        blob = await _read_upload(f, limits.max_import_bytes, "the concept zip")
        rename = form.get("name")
        overwrite = _truthy(form.get("overwrite", "false"))
        space = server.space(user)

        def run() -> dict:
            name = rename.strip(" ") if isinstance(rename, str) and rename.strip() else None
            return import_concept(server, user, space, blob, name, overwrite, concept_view)

        view = await anyio.to_thread.run_sync(run)
        return JSONResponse(view, status_code=201)

    # ---- jobs ------------------------------------------------------------------------------
    def _own_job(user: User, job_id: str) -> dict:
        job = server.db.get_job(job_id) if len(job_id) < 64 else None
        if job is None or job["user_id"] != user.id:
            raise APIError(404, f"no training job {job_id!r}", param="id", code="job_not_found")
        return job

    @app.get("/v1/jobs")
    async def jobs_list(user: User = Depends(current_user)):
        return {"object": "list", "data": [server.jobs.view(j) for j in server.db.list_jobs(user.id)]}

    @app.get("/v1/jobs/{job_id}")
    async def job_get(job_id: str, user: User = Depends(current_user)):
        return server.jobs.view(_own_job(user, job_id))

    @app.delete("/v1/jobs/{job_id}")
    async def job_cancel(job_id: str, user: User = Depends(current_user)):
        job = _own_job(user, job_id)
        if job["status"] in ACTIVE:
            await anyio.to_thread.run_sync(lambda: server.jobs.cancel(job_id, wait=120))
        return server.jobs.view(server.db.get_job(job_id) or job)

    return app
