"""Per-user quotas (concepts, storage) and the rule that nothing is written for a removed user.

``yollava users rm`` runs in another process: it deletes the user's rows, then their folder. A request
that authenticated just before may still be running, so every write for a user happens inside
:func:`writing_for`, which checks that the user exists before writing and again after; if they were
removed meanwhile, whatever was written goes with their folder and the request gets 401.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .db import ACTIVE, UserRemoved
from .errors import APIError


def folder_bytes(root: Path) -> int:
    total = 0
    if root.is_dir():
        for p in root.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
    return total


def concept_names(server, user_id: int, space) -> set[str]:
    """Names the user holds: saved concepts, and concepts queued or being trained."""
    names = {p.stem for p in space.concepts.glob("*.json")} if space.concepts.is_dir() else set()
    return names | {job["concept"] for job in server.db.list_jobs(user_id, ACTIVE)}


def check_quotas(server, user_id: int, space, name: str, incoming_bytes: int, replaced_bytes: int = 0) -> None:
    """429 if adding ``name`` (``incoming_bytes`` of files) would take the user over a quota."""
    limits = server.limits
    names = concept_names(server, user_id, space)
    if name not in names and len(names) >= limits.max_concepts_per_user:
        raise APIError(429, f"you have {len(names)} concepts, the most this server allows per user "
                            f"({limits.max_concepts_per_user}); delete one before adding <{name}>",
                       type="insufficient_quota", code="concept_quota_exceeded")
    used = folder_bytes(space.root)
    if used - replaced_bytes + incoming_bytes > limits.max_storage_bytes_per_user:
        raise APIError(429, f"<{name}> needs {incoming_bytes:,} bytes and you use {used:,} of your "
                            f"{limits.max_storage_bytes_per_user:,}; delete a concept first",
                       type="insufficient_quota", code="storage_quota_exceeded")


def _gone() -> APIError:
    return APIError(401, "your user was removed from this server; nothing was stored", code="user_removed",
                    headers={"WWW-Authenticate": "Bearer"})


@contextlib.contextmanager
def writing_for(server, user_id: int, space):
    """Run a write for the user only if they exist, and undo it if they were removed meanwhile."""
    if not server.db.user_exists(user_id):
        raise _gone()
    try:
        yield
    except UserRemoved:
        raise _gone() from None
    finally:
        if not server.db.user_exists(user_id):
            shutil.rmtree(space.root, ignore_errors=True)
    if not server.db.user_exists(user_id):
        raise _gone()
