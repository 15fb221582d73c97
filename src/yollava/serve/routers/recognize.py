"""``POST /v1/recognize``: is each named concept in the photo, or who of the caller's concepts is."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request

from ...errors import YollavaError
from ..bodies import read_json
from ..db import User
from ..errors import checked_name, from_yollava
from ..openai_compat import RecognizeRequest
from ..photos import decode_data_url
from ..server import Server
from .common import concepts_for, current_user, get_server

router = APIRouter()


@router.post("/v1/recognize")
async def recognize(request: Request, user: User = Depends(current_user), server: Server = Depends(get_server)):
    req = await read_json(request, RecognizeRequest, server.limits.max_json_depth, server.limits.max_json_values)
    names = list(dict.fromkeys(checked_name(n, "concepts") for n in req.concepts)) if req.concepts is not None else None
    url = req.image.get("url") if isinstance(req.image, dict) else req.image

    def recognisable(names: list[str]) -> None:
        """404 for a name the user does not have; 409 for one whose concept head is not fitted yet."""
        sources = server.who.sources(user.id)
        for name in names:
            if name not in sources:
                concepts_for(server, user, [name], "concepts")

    def run():
        if names is not None:
            recognisable(names)  # before decoding: an unknown concept is cheap to report
        blob = decode_data_url(url, server.limits.max_photo_bytes, param="image")
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
