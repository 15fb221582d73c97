"""JSON request bodies: bounded nesting, finite numbers and valid Unicode before any model sees them."""

from __future__ import annotations

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..safejson import UnsafeJSONError, loads
from .errors import APIError

#: bodies above this size are parsed in a worker thread (the event loop keeps serving)
_INLINE_BYTES = 256 * 1024


def parse_body(body: bytes, max_depth: int):
    try:
        data = loads(body, max_depth=max_depth, what="request body")
    except UnsafeJSONError as e:
        raise APIError(400, str(e)) from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


async def read_json(request: Request, model: type[BaseModel], max_depth: int = 32):
    body = await request.body()
    if len(body) > _INLINE_BYTES:
        data = await anyio.to_thread.run_sync(parse_body, body, max_depth)
    else:
        data = parse_body(body, max_depth)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        parts, param = [], None
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ())) or "body"
            param = param or where
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        raise APIError(422, "invalid request: " + "; ".join(parts), param=param) from None
