"""Per-user quotas (concepts, storage, pictures drawn per hour) and the rule that nothing is written for a removed user.

``yollava users rm`` runs in another process: it deletes the user's rows, then their folder. A request
that authenticated just before may still be running, so every write for a user happens inside
:func:`writing_for`, which checks that the user exists before writing and again after; if they were
removed meanwhile, whatever was written goes with their folder and the request gets 401.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import defaultdict, deque
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


class HourlyQuota:
    """At most ``limit`` units (pictures) per user in any sliding hour, counted in this server process (0: no limit).
    :meth:`take` reserves them or raises 429; :meth:`give_back` returns units whose work failed."""

    def __init__(self, limit: int, what: str = "pictures", window_s: float = 3600.0, clock=time.monotonic):
        self.limit, self.what, self.window_s, self.clock = limit, what, window_s, clock
        self._used: dict[int, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def take(self, user_id: int, n: int) -> None:
        if not self.limit:
            return
        with self._lock:
            now, used = self.clock(), self._used[user_id]
            while used and used[0] <= now - self.window_s:
                used.popleft()
            if n > self.limit:
                raise APIError(429, f"you asked for {n} {self.what}; this server allows at most {self.limit} per hour",
                               type="insufficient_quota", code="image_quota_exceeded")
            if len(used) + n > self.limit:
                wait = max(1, int(used[0] + self.window_s - now)) if used else 0
                raise APIError(429, f"you asked for {n} {self.what}, and {len(used)} of your {self.limit} per hour are used; "
                                    f"try again in about {wait} s", type="insufficient_quota", code="image_quota_exceeded")
            used.extend([now] * n)

    def give_back(self, user_id: int, n: int) -> None:
        with self._lock:
            used = self._used[user_id]
            for _ in range(min(n, len(used))):
                used.pop()


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
