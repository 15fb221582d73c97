"""Where each user's things live under the server home, and how a concept is removed without a trace.

    HOME/server.db                         users, hashed keys, jobs
    HOME/users/<id>/concepts/NAME.json     the user's concepts (NAME.safetensors beside it)
    HOME/users/<id>/jobs/<job>/            one training job while it runs: photos/, training_set.json,
                                           answers/ (synthesised conversation cache), checkpoints/
    HOME/pool/                             the negatives pool index (when --pool is given)
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


class UserSpace:
    def __init__(self, home: Path, user_id: int):
        self.root = Path(home) / "users" / str(int(user_id))
        self.concepts = self.root / "concepts"
        self.jobs = self.root / "jobs"
        self.imports = self.root / "imports"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def concept_files(self, name: str) -> list[Path]:
        """The concept's two files and any temporary file an interrupted atomic write left behind."""
        files = [self.concepts / f"{name}.json", self.concepts / f"{name}.safetensors"]
        if self.concepts.is_dir():
            files += list(self.concepts.glob(f".{name}.json.*.tmp")) + list(self.concepts.glob(f".{name}.safetensors.*.tmp"))
        return files

    def has_concept(self, name: str) -> bool:
        return (self.concepts / f"{name}.json").is_file()

    def remove_concept_files(self, name: str) -> bool:
        """Remove NAME.json first (a half-removed concept is then invisible, not broken), then the rest."""
        found = False
        for p in self.concept_files(name):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                found = True
        return found

    def remove_job_dir(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            self.jobs.rmdir()  # only if empty
