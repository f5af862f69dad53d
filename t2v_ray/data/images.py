"""Image bytes <-> PIL images, without torch (validation and builders must not pay for importing it)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """Image bytes that PIL cannot decode; the message says which image when known."""


def decode_image(data: bytes, image_id: str | None = None) -> Image.Image:
    """Decode PNG/JPEG (or any PIL-readable) bytes into a fully loaded PIL image.

    Raises:
        ImageDecodeError: empty, truncated or unrecognised bytes.
    """
    where = f" (image_id {image_id!r})" if image_id is not None else ""
    if not data:
        raise ImageDecodeError(f"empty image bytes{where}")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now, so truncation surfaces here and not inside a transform
    except UnidentifiedImageError as e:  # its message only repeats the BytesIO repr
        raise ImageDecodeError(f"unrecognised image format{where}; first bytes {bytes(data[:8])!r}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"cannot decode image{where}: {e}; first bytes {bytes(data[:8])!r}") from e
    return img


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of a PIL image (deterministic for identical pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
