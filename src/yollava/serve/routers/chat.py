"""``POST /v1/chat/completions``: OpenAI-compatible chat with the caller's concepts (streamed or not)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import YollavaError
from ...who import presence_hint, who_prompt
from ..bodies import read_json
from ..db import User
from ..errors import APIError, checked_name, error_body, from_yollava
from ..host import ChatSession
from ..openai_compat import DONE, ChatRequest, TextStream, chunk, completion, completion_id, message_parts, sse, usage_chunk
from ..photos import decode_data_url
from ..server import Server
from .common import concepts_for, current_user, get_server

log = logging.getLogger(__name__)
_END = object()

router = APIRouter()


def _prepare_chat(server: Server, user: User, req: ChatRequest):
    if req.n not in (None, 1):
        raise APIError(422, "only n=1 is supported", param="n")
    if len(req.messages) > server.limits.max_messages:
        raise APIError(413, f"at most {server.limits.max_messages} messages per request", param="messages")
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
            if n_images > server.limits.max_chat_images:
                raise APIError(413, f"at most {server.limits.max_chat_images} photos per conversation", param="messages")
            blob = decode_data_url(urls[0], server.limits.max_photo_bytes, param=f"messages[{i}].content")
            image, _ = server.photos.open(blob, label=f"messages[{i}] photo", param=f"messages[{i}].content")
        role = "system" if msg.role == "developer" else msg.role
        conversation.append((role, text, image))
    if n_chars > server.limits.max_chat_chars:
        raise APIError(413, f"at most {server.limits.max_chat_chars:,} characters of text per request", param="messages")
    if len(req.concepts or []) > server.limits.max_chat_concepts:
        raise APIError(422, f"at most {server.limits.max_chat_concepts} concepts per request", param="concepts")
    extra = [checked_name(n, "concepts") for n in (req.concepts or [])]
    names = list(dict.fromkeys([*extra, *server.host.mentioned_concepts(" ".join(t for _, t, _ in conversation))]))
    if len(names) > server.limits.max_chat_concepts:
        raise APIError(422, f"at most {server.limits.max_chat_concepts} concepts per request ({len(names)} named)", param="messages")
    concepts_for(server, user, names, "messages")
    found = []
    if n_images and req.who is not False:
        last = max(i for i, (_, _, img) in enumerate(conversation) if img is not None)
        role, text, image = conversation[last]
        if names:  # concepts named: what their concept heads see in the photo comes first
            checked = server.who.heads_on(user.id, names, image)
            found, hint = [f for f in checked if f.present], presence_hint(checked)
        else:  # no concept named: who is in it?
            found = server.who.who(user.id, image).found[:3]
            hint, names = who_prompt(found)
        if hint:
            conversation[last] = (role, f"{hint} {text}", image)
    max_new = req.max_completion_tokens or req.max_tokens or server.limits.default_max_tokens
    if max_new > server.limits.max_tokens_limit:
        raise APIError(422, f"max_tokens may be at most {server.limits.max_tokens_limit}", param="max_tokens")
    engine = server.host.request_engine(server.space(user).concepts, names, server.limits.max_prompt_tokens)
    session = ChatSession(engine, conversation, names, [f.as_dict() for f in found])
    gen = session.stream(max_new, temperature=req.temperature or 0.0, top_p=req.top_p if req.top_p is not None else 1.0, seed=req.seed)
    return session, gen, max_new


def _step(server: Server, gen, engine):
    if engine.context_full:  # the model's context is full: the answer ends here
        return _END
    with server.host.lock:
        return next(gen, _END)


async def step(server: Server, gen, engine):
    try:
        return await anyio.to_thread.run_sync(_step, server, gen, engine, limiter=server.step_limiter)
    except YollavaError as e:
        raise from_yollava(e, param="messages") from None
    except ValueError as e:
        raise APIError(422, f"cannot build the prompt: {e}", param="messages") from None


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    req = await read_json(request, ChatRequest, server.limits.max_json_depth, server.limits.max_json_values)
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
            engine, gen, max_new = await anyio.to_thread.run_sync(_prepare_chat, server, user, req)
        except YollavaError as e:
            raise from_yollava(e, param="messages") from None
        text = TextStream(stops)
        first = await step(server, gen, engine)  # prompt + first token now: prompt errors become 4xx, not a broken stream
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
                piece = await step(server, gen, engine)
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
                piece = await step(server, gen, engine)
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
