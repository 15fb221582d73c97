"""``POST /v1/images/generations``: OpenAI-compatible image generation with the caller's concepts (Yo'Chameleon).

The body is OpenAI's (``prompt``, ``n``, ``size``, ``response_format``, ``model``, ``user``) plus yollava's ``seed``,
``guidance``, ``temperature`` and ``concepts``; concepts named in the prompt (``<bo>``) are the caller's own, as in
chat. The answer is ``{"created", "data": [{"b64_json", "revised_prompt"}], "concepts", "self_prompted"}`` (PNG).
Only a server whose model draws (Janus) generates; on another (``pocket``) the request is refused with the families
that can. A concept trained without generation tokens is refused with how to get them. Requests share the
generation slots and the model lock with chat; ``Limits.max_images_per_request`` caps ``n`` and
``Limits.max_images_per_user_per_hour`` the pictures a user draws in any hour (429 ``image_quota_exceeded``).
"""

from __future__ import annotations

import base64
import io
import time

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import YollavaError
from ..bodies import read_json
from ..db import User
from ..errors import APIError, checked_name, from_yollava
from ..server import Server
from .common import concepts_for, current_user, get_server

router = APIRouter()


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options (quality, style, ...) are ignored
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    #: "auto" or the model's own size ("384x384" for Janus-Pro); the model draws one size only
    size: str | None = None
    response_format: str | None = None
    user: str | None = None
    #: yollava extensions
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    guidance: float | None = Field(None, ge=0, le=50)
    temperature: float | None = Field(None, ge=0, le=2)
    concepts: list[str] | None = None


def _draw(server: Server, user: User, req: ImageRequest) -> dict:
    limits = server.limits
    if req.n > limits.max_images_per_request:
        raise APIError(422, f"n may be at most {limits.max_images_per_request} images per request", param="n")
    if req.response_format not in (None, "b64_json"):
        raise APIError(422, "only response_format 'b64_json' is supported (the server keeps no image files to link to)",
                       param="response_format")
    if len(req.prompt) > limits.max_chat_chars:
        raise APIError(413, f"the prompt may be at most {limits.max_chat_chars:,} characters", param="prompt")
    marker = server.host.image_marker
    if marker and marker in req.prompt:
        raise APIError(422, f"the prompt may not contain {marker!r}", param="prompt")
    from ...engine.drawing import require_writer

    try:
        writer = require_writer(server.host.engine.adapter)
    except YollavaError as e:
        raise APIError(422, str(e), param="model", code="model_cannot_draw") from None
    side = writer.image_size
    if req.size not in (None, "auto") and side is not None and req.size != f"{side[0]}x{side[1]}":
        raise APIError(422, f"this model draws {side[0]}x{side[1]} images only; send size '{side[0]}x{side[1]}' or 'auto'", param="size")
    extra = [checked_name(n, "concepts") for n in (req.concepts or [])]
    names = list(dict.fromkeys([*extra, *server.host.mentioned_concepts(req.prompt)]))
    if len(names) > limits.max_chat_concepts:
        raise APIError(422, f"at most {limits.max_chat_concepts} concepts per request ({len(names)} named)", param="prompt")
    concepts_for(server, user, names, "prompt")
    engine = server.host.request_engine(server.space(user).concepts, names, limits.max_prompt_tokens)
    quota = server.image_quota
    quota.take(user.id, req.n)
    try:
        with server.host.lock:
            drawing = engine_draw(engine, req, names)
    except BaseException:
        quota.give_back(user.id, req.n)  # nothing was drawn: it does not count
        raise
    side = drawing.images[0].size
    data = []
    for image in drawing.images:
        buf = io.BytesIO()
        image.save(buf, "PNG")
        data.append({"b64_json": base64.b64encode(buf.getvalue()).decode(), "revised_prompt": drawing.prompt})
    return {"created": int(time.time()), "data": data, "concepts": names, "self_prompted": drawing.self_prompted,
            "size": f"{side[0]}x{side[1]}", "model": server.model_name,
            "guidance": req.guidance if req.guidance is not None else writer.default_guidance}


def engine_draw(engine, req: ImageRequest, names: list[str]):
    from ...engine.drawing import generate_image

    return generate_image(engine, req.prompt, n=req.n, seed=0 if req.seed is None else req.seed, guidance=req.guidance,
                          temperature=1.0 if req.temperature is None else req.temperature, concepts=names)


@router.post("/v1/images/generations")
async def images_generations(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    req = await read_json(request, ImageRequest, server.limits.max_json_depth, server.limits.max_json_values)
    async with server.generation_slot():
        try:
            body = await anyio.to_thread.run_sync(_draw, server, user, req, limiter=server.step_limiter)
        except YollavaError as e:
            raise from_yollava(e, param="prompt") from None
    return JSONResponse(body)
