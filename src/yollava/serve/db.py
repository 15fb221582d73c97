"""The server's SQLite database (``HOME/server.db``): users, API keys (salted scrypt hashes), training jobs.

API keys look like ``yk-<12 hex key id>-<secret>``. Only the key id is stored in clear (to find the
row); the secret is stored as a salted scrypt hash and shown once, when the key is made. A verified
secret is remembered in memory, so a request costs one scrypt only on a key's first use; but every
request still looks the key up in the database (one indexed query), so ``yollava users revoke`` and
``yollava users rm`` take effect at once, also for a server that is running.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_PREFIX = "yk"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}
_VERIFIED_TTL_S = 600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  key_id TEXT NOT NULL UNIQUE,
  salt BLOB NOT NULL,
  hash BLOB NOT NULL,
  created REAL NOT NULL,
  revoked REAL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  concept TEXT NOT NULL,
  status TEXT NOT NULL,
  phase TEXT,
  progress TEXT NOT NULL DEFAULT '{}',
  error TEXT,
  recipe TEXT NOT NULL,
  overwrite INTEGER NOT NULL DEFAULT 0,
  n_photos INTEGER NOT NULL,
  resumed INTEGER NOT NULL DEFAULT 0,
  result TEXT,
  created REAL NOT NULL,
  started REAL,
  finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_id, concept);
"""

ACTIVE = ("queued", "running")


class UserRemoved(LookupError):
    """The user was deleted (``yollava users rm``) while one of their requests was running."""


@dataclass(frozen=True)
class User:
    id: int
    name: str


def _hash_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def private(path: Path) -> None:
    """Create ``path`` readable and writable by its owner only (0600), or make it so; also its SQLite
    companions (-wal, -shm, -journal), which SQLite creates with the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for p in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except FileNotFoundError:
            pass


class Database:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
            self.path.parent.chmod(0o700)  # the server home: users' concepts and key hashes
        private(self.path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
            self._conn.executescript(SCHEMA)
        self._verified: dict[bytes, float] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    # ---- users and keys --------------------------------------------------------------------
    def add_user(self, name: str) -> User:
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("a user name is 1-64 characters")
        try:
            cur = self._exec("INSERT INTO users(name, created) VALUES (?, ?)", (name, time.time()))
        except sqlite3.IntegrityError:
            raise ValueError(f"user {name!r} already exists (`yollava users key {name}` issues another key)") from None
        return User(cur.lastrowid, name)

    def get_user(self, name: str) -> User | None:
        row = self._one("SELECT id, name FROM users WHERE name = ?", (name,))
        return User(row["id"], row["name"]) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT u.id, u.name, u.created, COUNT(k.id) AS keys FROM users u "
            "LEFT JOIN api_keys k ON k.user_id = u.id AND k.revoked IS NULL GROUP BY u.id ORDER BY u.id"
        )
        return [dict(r) for r in rows]

    def new_key(self, user: User) -> str:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        self._exec(
            "INSERT INTO api_keys(user_id, key_id, salt, hash, created) VALUES (?, ?, ?, ?, ?)",
            (user.id, key_id, salt, _hash_secret(secret, salt), time.time()),
        )
        return f"{KEY_PREFIX}-{key_id}-{secret}"

    def revoke_keys(self, user: User) -> int:
        cur = self._exec("UPDATE api_keys SET revoked = ? WHERE user_id = ? AND revoked IS NULL", (time.time(), user.id))
        self._verified.clear()
        return cur.rowcount

    def delete_user(self, user: User) -> None:
        self._exec("DELETE FROM users WHERE id = ?", (user.id,))
        self._verified.clear()

    def user_exists(self, user_id: int) -> bool:
        return self._one("SELECT 1 FROM users WHERE id = ?", (user_id,)) is not None

    def authenticate(self, key: str) -> User | None:
        """The user a key belongs to, or None (unknown, malformed or revoked key, or a removed user).

        The key's row is read on every call (another process may have revoked it or removed its user);
        only the scrypt check of the secret against that row's hash is remembered."""
        parts = key.split("-", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12 or not parts[2]:
            return None
        row = self._one(
            "SELECT k.salt, k.hash, u.id, u.name FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.key_id = ? AND k.revoked IS NULL",
            (parts[1],),
        )
        if row is None:
            return None
        digest = hashlib.sha256(key.encode() + bytes(row["hash"])).digest()  # bound to this very row
        hit = self._verified.get(digest)
        now = time.monotonic()
        if hit is None or now - hit > _VERIFIED_TTL_S:
            if not hmac.compare_digest(_hash_secret(parts[2], row["salt"]), row["hash"]):
                return None
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[digest] = now
        return User(row["id"], row["name"])

    # ---- jobs ------------------------------------------------------------------------------
    def add_job(self, user: User, concept: str, recipe: dict, n_photos: int, overwrite: bool) -> str:
        job_id = "job-" + uuid.uuid4().hex[:16]
        try:
            self._exec(
                "INSERT INTO jobs(id, user_id, concept, status, phase, recipe, overwrite, n_photos, created) "
                "VALUES (?, ?, ?, 'queued', 'queued', ?, ?, ?, ?)",
                (job_id, user.id, concept, json.dumps(recipe), int(overwrite), n_photos, time.time()),
            )
        except sqlite3.IntegrityError:  # the users row is gone (foreign key)
            raise UserRemoved(f"user {user.name!r} no longer exists") from None
        return job_id

    def update_job(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        for k in ("progress", "result"):
            if k in fields and not isinstance(fields[k], str) and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job_dict(row) if row else None

    def list_jobs(self, user_id: int | None = None, status: tuple[str, ...] | None = None, concept: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        if status:
            sql += f" AND status IN ({','.join('?' * len(status))})"
            args += list(status)
        if concept is not None:
            sql += " AND concept = ?"
            args.append(concept)
        return [_job_dict(r) for r in self._all(sql + " ORDER BY created", tuple(args))]

    def delete_jobs(self, user_id: int, concept: str) -> int:
        return self._exec("DELETE FROM jobs WHERE user_id = ? AND concept = ?", (user_id, concept)).rowcount

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (so deleted rows do not linger in the log)."""
        self._exec("PRAGMA wal_checkpoint(TRUNCATE)")


def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["progress"] = json.loads(d["progress"] or "{}")
    d["recipe"] = json.loads(d["recipe"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    d["overwrite"] = bool(d["overwrite"])
    return d
