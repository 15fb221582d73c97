"""Reading user photos: every failure is a clear :class:`InvalidImageError`, never a crash deep inside."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InvalidImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: refuse decompression bombs early; far above any real photo (20k x 20k is 400 MP)
MAX_PIXELS = 64_000_000


_OBJECT_REPR = re.compile(r"<[^<>]{0,200} at 0x[0-9a-fA-F]+>")
_QUOTED_NAME = re.compile(r"""\s*'[^']*'$""")


def unreadable_reason(e: BaseException) -> str:
    """Why Pillow could not read a photo, in words for a person: no Python object (``<_io.BytesIO object at
    0x7f...>``), no exception class, no file name (the caller says which photo it was)."""
    if isinstance(e, UnidentifiedImageError):
        return "not a readable image (not a JPEG, PNG, WebP, BMP, GIF or TIFF file)"
    if isinstance(e, MemoryError):
        return "not a readable image (it needs more memory than is available)"
    text = _QUOTED_NAME.sub("", _OBJECT_REPR.sub("the file", str(e))).strip().rstrip(".:")
    return f"not a readable image ({text})" if text else "not a readable image (damaged or incomplete file)"


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
        raise InvalidImageError(path, unreadable_reason(e)) from None


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


def photo_views(image: str | Path | Image.Image) -> list[Image.Image]:
    """The views a photo is looked at in: the whole photo (encoders centre-crop it), squares covering it edge to edge
    when it is wide or tall (a centre crop would cut the sides off), and the four corners at 60 % of each side (a
    subject that fills only part of the photo). Concept heads and concepts that read ``"views"`` answer with their
    best view."""
    im = load_image(image)
    w, h = im.size
    views = [im]
    if max(w, h) >= 1.3 * min(w, h):
        side, long = min(w, h), max(w, h)
        n = math.ceil(long / side)
        step = (long - side) / max(1, n - 1)
        for i in range(n):
            o = round(i * step)
            views.append(im.crop((o, 0, o + side, h)) if w > h else im.crop((0, o, w, o + side)))
    cw, ch = max(1, int(w * 0.6)), max(1, int(h * 0.6))
    views += [im.crop((x, y, x + cw, y + ch)) for x in (0, w - cw) for y in (0, h - ch)]
    return views
