"""Photos arriving over HTTP (data URLs, uploads): size and pixel limits are checked before decoding."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import threading
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import APIError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
#: formats we accept, and the file suffix an upload is stored under
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "MPO": ".jpg"}


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


def open_photo(data: bytes, max_pixels: int, label: str = "image", param: str | None = None, max_side: int | None = None) -> tuple[Image.Image, str]:
    """Decode ``data`` into an RGB image and its format; 413/422 with the reason if it is not a usable photo.

    The header is read first, so a 20k x 20k image is refused without allocating its pixels. With
    ``max_side`` the photo is shrunk while it is decoded: a JPEG decodes straight at 1/2-1/8 scale
    (``Image.draft``), other formats are reduced before the RGB conversion, so only one full-size
    buffer (PIL keeps 4 bytes a pixel) exists, briefly."""
    if not data:
        raise APIError(422, f"{label}: not a readable image (empty file)", param=param, code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or ""
            if fmt not in FORMATS:
                raise APIError(422, f"{label}: unsupported image format {fmt or 'unknown'} (use JPEG, PNG, WebP, BMP, GIF or TIFF)", param=param, code="invalid_image")
            if img.width * img.height > max_pixels:
                raise APIError(413, f"{label}: image is {img.width}x{img.height}, more than {max_pixels:,} pixels "
                                    f"(send it at most {max_pixels // 1_000_000} megapixels)", param=param, code="image_too_large")
            if max_side and max(img.size) > max_side:
                if fmt in ("JPEG", "MPO"):
                    img.draft("RGB", (max_side, max_side))  # the decoder itself skips the detail
                img.load()
                factor = max(img.size) // max_side
                if factor >= 2:
                    with contextlib.suppress(ValueError):  # box-average by an integer factor: no big intermediate
                        img = img.reduce(factor)
                if max(img.size) > max_side:
                    img.thumbnail((max_side, max_side))
            img.load()
            return img.convert("RGB"), fmt
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise APIError(413, f"{label}: image has too many pixels ({e})", param=param, code="image_too_large") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise APIError(422, f"{label}: not a readable image ({e.__class__.__name__}: {e})", param=param, code="invalid_image") from None


class PhotoDecoder:
    """Decodes photos for every request of one server: at most ``concurrent`` at once (the rest wait up
    to ``timeout_s``, then get 503), each checked against ``max_pixels`` and shrunk to ``max_side``.
    So the memory photos take is bounded by the server, not by what clients send."""

    def __init__(self, max_pixels: int, max_side: int, concurrent: int, timeout_s: float = 120.0):
        self.max_pixels, self.max_side, self.timeout_s = max_pixels, max_side, timeout_s
        self.slots = threading.BoundedSemaphore(max(1, concurrent))

    def open(self, data: bytes, label: str = "image", param: str | None = None) -> tuple[Image.Image, str]:
        if not self.slots.acquire(timeout=self.timeout_s):
            raise APIError(503, f"the server is busy decoding photos; retry later ({label})", param=param, code="server_busy")
        try:
            return open_photo(data, self.max_pixels, label=label, param=param, max_side=self.max_side)
        finally:
            self.slots.release()
