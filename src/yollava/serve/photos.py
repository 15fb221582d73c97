"""Photos arriving over HTTP (data URLs, uploads): size, pixel and memory limits are checked before decoding.

The memory photos take is bounded by the server, not by what clients send:

* the pixel count is read from the header (a WebP's from its first bytes, before Pillow's decoder, which
  allocates its canvas as it opens) and refused above ``max_pixels``;
* each photo is charged what its format needs while it decodes (:data:`DECODE_BYTES_PER_PIXEL`, measured
  by ``benchmarks/serve_memory.py``; a JPEG only at the scale it is drafted to), and waits until that fits
  in the server's budget for all photos being decoded (``max_decode_bytes``) and a decoder is free
  (``max_decoding``); a photo that alone needs more than the budget is refused (413);
* decoded photos are shrunk to ``max_side`` (JPEGs by the decoder itself, other formats by ``reduce``);
* glibc's allocator is told to hand big buffers straight back to the system (:func:`return_big_buffers`), so
  a burst of photos does not leave the process holding their memory.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import ctypes
import ctypes.util
import io
import re
import threading
import time
import warnings

from PIL import Image, UnidentifiedImageError

from ..images import unreadable_reason
from .errors import APIError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
#: formats we accept, and the file suffix an upload is stored under
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "MPO": ".jpg"}
#: peak bytes per decoded pixel while a photo of each format decodes, rounded up from benchmarks/serve_memory.py
#: (24 MP photos; results in benchmarks/results/serve_memory.md). Pillow keeps 4 bytes a pixel; its WebP
#: decoder also holds the canvas twice inside libwebp and once more as a copy. A JPEG is charged at the size it
#: is drafted to (1/2 to 1/8 scale), with the decoder's own buffers.
DECODE_BYTES_PER_PIXEL = {"WEBP": 16.5, "PNG": 5.0, "TIFF": 5.0, "BMP": 5.0, "GIF": 5.0, "JPEG": 5.5, "MPO": 5.5}
#: on top of that, two buffers of the shrunk photo (the reduced image and its RGB copy), 4 bytes a pixel
_OUTPUT_COPIES = 2 * 4
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
#: allocations at least this big get their own mapping, returned to the system when freed
MMAP_THRESHOLD = 4 * 1024 * 1024
_tuned = False


def return_big_buffers() -> bool:
    """Make glibc's malloc serve every allocation of :data:`MMAP_THRESHOLD` bytes or more from its own mapping,
    unmapped when freed. By default the threshold rises to 32 MiB after the first big free, so a photo's
    buffers (4-30 MB) come from per-thread arenas that keep the memory: 16 recognize requests at once left
    the server 480 MB larger for good. Once per process; False where the C library is not glibc."""
    global _tuned
    if _tuned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _tuned


def decode_data_url(url: str, max_bytes: int, param: str = "image_url") -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL (remote URLs are refused: the server fetches nothing)."""
    if not isinstance(url, str):
        raise APIError(422, "an image must be given as a data URL string", param=param)
    m = _DATA_URL.match(url[:256])
    if m is None:
        if url.startswith(("http://", "https://")):
            raise APIError(422, "remote image URLs are not fetched: send the photo inline as a data URL (data:image/jpeg;base64,...)", param=param, code="invalid_image")
        raise APIError(422, "image_url must be a data URL (data:image/jpeg;base64,...)", param=param, code="invalid_image")
    payload = url[m.end():]
    if not m.group("b64"):
        raise APIError(422, "image data URLs must be base64-encoded (';base64,')", param=param, code="invalid_image")
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise APIError(413, f"image is larger than {max_bytes:,} bytes", param=param, code="image_too_large")
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise APIError(422, f"image data URL is not valid base64 ({e})", param=param, code="invalid_image") from None
    if len(data) > max_bytes:
        raise APIError(413, f"image is larger than {max_bytes:,} bytes", param=param, code="image_too_large")
    return data


def webp_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a WebP file's first 30 bytes (VP8, VP8L or VP8X), None if it is not a WebP;
    ``(0, 0)`` for a WebP whose header does not say."""
    if len(data) < 16 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    kind = data[12:16]
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return 0, 0


def _too_many_pixels(label: str, width: int, height: int, max_pixels: int, param: str | None) -> APIError:
    return APIError(413, f"{label}: image is {width}x{height}, more than {max_pixels:,} pixels "
                         f"(send it at most {max_pixels // 1_000_000} megapixels)", param=param, code="image_too_large")


def _unreadable(label: str, reason: str, param: str | None) -> APIError:
    return APIError(422, f"{label}: {reason}", param=param, code="invalid_image")


def decode_cost(fmt: str, size: tuple[int, int], max_side: int | None) -> int:
    """Bytes a photo of ``size`` pixels (as it will be decoded: after a JPEG's draft) needs at most while it
    decodes and shrinks to ``max_side``."""
    width, height = size
    pixels = width * height
    side = max(width, height, 1)
    out = pixels if not max_side or side <= max_side else pixels * (max_side / side) ** 2
    return int(pixels * DECODE_BYTES_PER_PIXEL[fmt] + out * _OUTPUT_COPIES)


@contextlib.contextmanager
def _no_budget(cost: int):
    yield


def open_photo(data: bytes, max_pixels: int, label: str = "image", param: str | None = None, max_side: int | None = None,
               reserve=None) -> tuple[Image.Image, str]:
    """Decode ``data`` into an RGB image and its format; 413/422 with the reason if it is not a usable photo.

    The header is read first, so a 20k x 20k image is refused without allocating its pixels. With
    ``max_side`` the photo is shrunk while it is decoded: a JPEG decodes straight at 1/2-1/8 scale
    (``Image.draft``), other formats are reduced before the RGB conversion, so only one full-size
    buffer exists, briefly. ``reserve(cost)``: a context manager held while the pixels are decoded, given
    the bytes that takes (:class:`PhotoDecoder` waits there for its memory budget)."""
    reserve = reserve or _no_budget
    if not data:
        raise _unreadable(label, "not a readable image (empty file)", param)
    size = webp_size(data)
    if size is not None:  # Pillow's WebP decoder allocates the whole canvas (twice) as it opens: check first
        if size == (0, 0):
            raise _unreadable(label, "not a readable image (a WebP file whose header gives no size)", param)
        if size[0] * size[1] > max_pixels:
            raise _too_many_pixels(label, *size, max_pixels, param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if size is not None:
                with reserve(decode_cost("WEBP", size, max_side)):
                    img = Image.open(io.BytesIO(data))
                    return _shrunk(img, _checked(img, max_pixels, label, param), max_side)
            img = Image.open(io.BytesIO(data))
            fmt = _checked(img, max_pixels, label, param)
            if max_side and max(img.size) > max_side and fmt in ("JPEG", "MPO"):
                img.draft("RGB", (max_side, max_side))  # the decoder itself skips the detail
            with reserve(decode_cost(fmt, img.size, max_side)):
                return _shrunk(img, fmt, max_side)
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise APIError(413, f"{label}: image has too many pixels (at most {max_pixels:,})", param=param, code="image_too_large") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, KeyError, TypeError) as e:
        raise _unreadable(label, unreadable_reason(e), param) from None


def _checked(img: Image.Image, max_pixels: int, label: str, param: str | None) -> str:
    fmt = img.format or ""
    if fmt not in FORMATS:
        raise APIError(422, f"{label}: unsupported image format {fmt or 'unknown'} (use JPEG, PNG, WebP, BMP, GIF or TIFF)", param=param, code="invalid_image")
    if img.width * img.height > max_pixels:
        raise _too_many_pixels(label, img.width, img.height, max_pixels, param)
    return fmt


def _shrunk(img: Image.Image, fmt: str, max_side: int | None) -> tuple[Image.Image, str]:
    img.load()
    if max_side and max(img.size) > max_side:
        factor = max(img.size) // max_side
        if factor >= 2:
            with contextlib.suppress(ValueError):  # box-average by an integer factor: no big intermediate
                img = img.reduce(factor)
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side))
    return img.convert("RGB"), fmt


class DecodeBudget:
    """Bytes and decoders for the photos being decoded at once, handed out first come, first served: a
    request waits until its photo's cost fits and a decoder is free (at most ``timeout_s``)."""

    def __init__(self, max_bytes: int, max_decoders: int):
        self.max_bytes, self.max_decoders = max(1, int(max_bytes)), max(1, int(max_decoders))
        self.used = self.active = 0
        self.peak = 0  # the most bytes reserved at once (tests and benchmarks read it)
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()

    def _fits(self, cost: int) -> bool:
        return self.active < self.max_decoders and self.used + cost <= self.max_bytes

    def acquire(self, cost: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or not self._fits(cost):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self.used += cost
                self.active += 1
                self.peak = max(self.peak, self.used)
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, cost: int) -> None:
        with self._cond:
            self.used -= cost
            self.active -= 1
            self._cond.notify_all()


class PhotoDecoder:
    """Decodes photos for every request of one server: each checked against ``max_pixels``, charged its
    decoding memory against ``max_bytes`` (with at most ``concurrent`` photos at once; the rest wait up to
    ``timeout_s``, then get 503) and shrunk to ``max_side``. So the memory photos take is bounded by the
    server, not by what clients send."""

    def __init__(self, max_pixels: int, max_side: int, concurrent: int, timeout_s: float = 120.0,
                 max_bytes: int = 400 * 1024 * 1024):
        self.max_pixels, self.max_side, self.timeout_s = max_pixels, max_side, timeout_s
        self.budget = DecodeBudget(max_bytes, concurrent)
        return_big_buffers()

    @contextlib.contextmanager
    def _reserved(self, cost: int, label: str, param: str | None):
        if cost > self.budget.max_bytes:
            mb = self.budget.max_bytes / 2**20
            raise APIError(413, f"{label}: decoding this photo would take {cost / 2**20:,.0f} MiB, more than the {mb:,.0f} MiB "
                                "this server allows for photos (send it as a JPEG, or with fewer pixels)", param=param, code="image_too_large")
        if not self.budget.acquire(cost, self.timeout_s):
            raise APIError(503, f"the server is busy decoding photos; retry later ({label})", param=param, code="server_busy")
        try:
            yield
        finally:
            self.budget.release(cost)

    def open(self, data: bytes, label: str = "image", param: str | None = None) -> tuple[Image.Image, str]:
        return open_photo(data, self.max_pixels, label=label, param=param, max_side=self.max_side,
                          reserve=lambda cost: self._reserved(cost, label, param))
