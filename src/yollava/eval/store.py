"""A run folder: the protocol it was made with (``config.json``) and one JSONL line per finished
(method, subject), so an interrupted run resumes where it stopped and never mixes protocols."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.pool import atomic_write_json

CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"


class ProtocolMismatch(ValueError):
    pass


def settings_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Where settings ``b`` (now) differ from ``a`` (recorded), as readable lines. A setting that ``a``
    does not have because it was added later counts as the same while ``b`` leaves it off (False/None):
    run folders and concepts made before it stay valid."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a and b[k] in (None, False):
                continue
            out += settings_differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} (run folder) vs {b!r} (now)"]


def read_records(path: str | Path) -> list[dict]:
    """The finished (method, subject) records of a run folder's ``records.jsonl`` (a line cut by a crash is skipped:
    that pair is simply redone)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class RunStore:
    def __init__(self, run_dir: str | Path, protocol: dict):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.protocol = json.loads(json.dumps(protocol, default=str))
        cfg = self.dir / CONFIG_FILE
        if cfg.exists():
            old = json.loads(cfg.read_text(encoding="utf-8"))
            diffs = settings_differences(old, self.protocol)
            if diffs:
                raise ProtocolMismatch(
                    f"run folder {self.dir} was made with other settings ({'; '.join(diffs[:5])}"
                    + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "") + "): use another --run-dir, or delete it"
                )
        else:
            atomic_write_json(cfg, self.protocol)
        self.path = self.dir / RECORDS_FILE

    def records(self) -> list[dict]:
        return read_records(self.path)

    def reusable_records(self, folders: list[Path]) -> dict[tuple[str, str], dict]:
        """Finished (method, subject) records of other run folders made under this protocol (by the rule that lets a
        run folder resume: :func:`settings_differences`, so a folder from before a setting existed still counts while
        that setting is left off): the same result, so a run need not compute it again. The first folder that has a
        pair wins; each record says where it came from (``reused_from``)."""
        out: dict[tuple[str, str], dict] = {}
        for folder in folders:
            cfg = Path(folder) / CONFIG_FILE
            if Path(folder).resolve() == self.dir.resolve() or not cfg.exists():
                continue
            if settings_differences(json.loads(cfg.read_text(encoding="utf-8")), self.protocol):
                continue
            for r in read_records(Path(folder) / RECORDS_FILE):
                out.setdefault((r["method"], r["subject"]), {**r, "reused_from": str(folder)})
        return out

    def done(self) -> set[tuple[str, str]]:
        return {(r["method"], r["subject"]) for r in self.records()}

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=str, ensure_ascii=False)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:  # a line cut by a crash must not swallow this one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        atomic_write_json(path, obj)
        return path

    def read_json(self, name: str) -> Any:
        path = self.dir / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
