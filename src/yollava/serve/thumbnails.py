"""Small JPEG thumbnails of each concept's training photos, so a gallery loads fast.

They are made from the decoded photos when a concept is uploaded (at most 160 px on the longer side,
a few KiB each), kept with the training job while it runs, and moved beside the concept when it is
saved::

    HOME/users/<id>/jobs/<job>/thumbnails/0.jpg ...   while the job runs
    HOME/users/<id>/thumbnails/NAME/0.jpg ...         the concept's, removed with it

An imported concept has none (its photos never reached this server).
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

from PIL import Image

from .spaces import UserSpace

#: the longer side of a thumbnail, in pixels
SIZE = 160


def make_thumbnail(image: Image.Image, size: int = SIZE) -> bytes:
    """JPEG bytes of ``image`` shrunk to at most ``size`` px on its longer side."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80, optimize=True)
    return buf.getvalue()


class Thumbnails:
    """One folder of numbered thumbnails."""

    def __init__(self, folder: Path):
        self.folder = folder

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.glob("*.jpg") if p.stem.isdigit()), key=lambda p: int(p.stem))

    def store(self, blobs) -> None:
        blobs = list(blobs)
        if not blobs:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for i, blob in enumerate(blobs):
            (self.folder / f"{i}.jpg").write_bytes(blob)

    def data_urls(self) -> list[str]:
        return ["data:image/jpeg;base64," + base64.b64encode(p.read_bytes()).decode() for p in self.files()]

    def move_to(self, other: Thumbnails) -> None:
        """Replace ``other``'s thumbnails with these (a retrained concept shows its new photos)."""
        other.remove()
        if self.files():
            other.folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.folder), str(other.folder))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the user's thumbnails folder, when it is empty
        except OSError:
            pass


def concept_thumbnails(space: UserSpace, name: str) -> Thumbnails:
    return Thumbnails(space.root / "thumbnails" / name)


def job_thumbnails(space: UserSpace, job_id: str) -> Thumbnails:
    return Thumbnails(space.job_dir(job_id) / "thumbnails")
