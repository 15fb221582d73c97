"""OpenAI chat-completions shapes: request parsing, response and SSE chunk building, stop strings."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import APIError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options (presence_penalty, ...) are ignored
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    #: OpenAI's ranges; a temperature below ``MIN_TEMPERATURE`` (1e-5) is greedy, as 0 is, and so is a tiny top_p
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what a torch.Generator takes
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=1)
    stream_options: dict[str, Any] | None = None
    #: yollava extension: concepts to introduce even if the text does not name them
    concepts: list[str] | None = None
    #: yollava extension: with a photo and no concept named, introduce the concepts found in the photo; with concepts
    #: named, say first what their concept heads see in it (default true; false: the language model alone)
    who: bool | None = None


class RecognizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: the concepts to check; omitted: who is here (every concept of the user that is present)
    concepts: list[str] | None = Field(None, min_length=1, max_length=32)
    image: str | dict[str, Any]
    threshold: float | None = Field(None, ge=0, le=1)
    #: which score answers: auto (the concept head until a concept is trained, then the better mode), head, yollava, fused
    mode: Literal["auto", "head", "yollava", "fused"] = "auto"
    #: without ``concepts``: retrieve (prototype index, then verify the top_k) or all (verify every concept)
    strategy: Literal["retrieve", "all"] = "retrieve"
    top_k: int | None = Field(None, ge=1, le=100)


def message_parts(msg: ChatMessage, index: int) -> tuple[str, list[str]]:
    """(text, [image data URLs]) of one message; 422 for content this server cannot use."""
    param = f"messages[{index}].content"
    if msg.content is None:
        return "", []
    if isinstance(msg.content, str):
        return msg.content, []
    texts, images = [], []
    for j, part in enumerate(msg.content):
        kind = part.get("type")
        if kind in ("text", "input_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise APIError(422, f"{param}[{j}]: a text part needs a string 'text'", param=param)
            texts.append(text)
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            if not isinstance(url, str):
                raise APIError(422, f"{param}[{j}]: an image_url part needs image_url.url (a data URL)", param=param)
            images.append(url)
        else:
            raise APIError(422, f"{param}[{j}]: unsupported content part type {kind!r} (use 'text' or 'image_url')", param=param)
    return "\n".join(texts), images


class TextStream:
    """What the client sees of the generated text: surrounding whitespace trimmed (as ``Engine.chat``
    does) and cut before the first stop string; text that could start a stop string is held back."""

    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.raw = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.raw += piece
        t = self.raw.lstrip()
        hits = [i for i in (t.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            end = len(t[: min(hits)].rstrip())
        else:
            end = len(t[: len(t) - self.hold].rstrip())
        out = t[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out

    def finish(self) -> str:
        if self.stopped:
            return ""
        t = self.raw.strip()
        out = t[self.sent :]
        self.sent = len(t)
        return out


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, content: str, finish_reason: str, usage: dict) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chunk(cid: str, model: str, created: int, delta: dict, finish_reason: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return sse(body)


def usage_chunk(cid: str, model: str, created: int, usage: dict) -> str:
    return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage})


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
