"""Reading user photos: every failure is a clear :class:`InvalidImageError`, never a crash deep inside."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InvalidImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: refuse decompression bombs early; far above any real photo (20k x 20k is 400 MP)
MAX_PIXELS = 64_000_000


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Open a photo as RGB, or raise :class:`InvalidImageError` saying what is wrong with it."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise InvalidImageError(path, "no such file")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InvalidImageError(path, f"image is {img.width}x{img.height}, more than {MAX_PIXELS:,} pixels")
            img.load()
            return img.convert("RGB")
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidImageError(path, f"not a readable image ({e.__class__.__name__}: {e})") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_images(folder: str | Path) -> list[Path]:
    """Photos in a folder (not recursive), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
