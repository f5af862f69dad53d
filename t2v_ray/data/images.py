"""Image bytes <-> PIL images, without torch (validation and builders must not pay for importing it).

The one decode path of the project (importers, validation, the contact sheet, the torch dataset and the probe
transforms all use it):

- the pixel count is checked from the header before any pixel is decoded (``max_pixels``), so a decompression
  bomb costs a header parse, not gigabytes;
- every decoder failure, Pillow's own ``DecompressionBombError`` included (an ``Exception``, not an ``OSError``),
  becomes an :class:`ImageDecodeError` naming the image;
- large images are decoded at reduced scale (``max_side``): JPEG through the decoder's DCT scaling
  (``Image.draft``: 1/2, 1/4 or 1/8 while decoding), other formats box-reduced by an integer factor
  (``Image.reduce``) before the final filtered resize;
- :func:`flatten` (from :mod:`t2v_ray.imaging`, shared with the probe transforms) composites transparency onto
  a background: ``convert("RGB")`` alone drops the alpha channel, and black line art on a transparent
  background would become black on black.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from t2v_ray.imaging import DEFAULT_BACKGROUND, Background, flatten, has_alpha

__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "Background",
    "ImageDecodeError",
    "ImageTooLargeError",
    "decode_image",
    "encode_png",
    "flatten",
    "has_alpha",
    "load_image",
    "open_image",
    "working_mode",
]

# 8000 x 8000 images pass; below Pillow's own bomb warning (Image.MAX_IMAGE_PIXELS, 89.5 MP); ~320 MB as RGBA.
DEFAULT_MAX_PIXELS = 80_000_000
# Importers downscale larger images: probes read 224-384 px, bigger ones would only inflate shards and every decode.
DEFAULT_MAX_SIDE = 1024


class ImageDecodeError(ValueError):
    """Image bytes that PIL cannot decode; the message says which image when known."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than the cap; nothing was decoded."""


def _where(image_id: str | None) -> str:
    return f" (image_id {image_id!r})" if image_id is not None else ""


def open_image(
    data: bytes, image_id: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Parse the header of ``data`` (no pixels decoded) and check its size against ``max_pixels``.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (or over Pillow's own decompression-bomb limit).
        ImageDecodeError: empty or unrecognised bytes, or a broken header.
    """
    where = _where(image_id)
    if not data:
        raise ImageDecodeError(f"empty image bytes{where}")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image too large{where}: {e}") from e
    except UnidentifiedImageError as e:  # its message only repeats the BytesIO repr
        raise ImageDecodeError(f"unrecognised image format{where}; first bytes {bytes(data[:8])!r}") from e
    except Exception as e:  # plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageDecodeError(f"cannot decode image{where}: {e}; first bytes {bytes(data[:8])!r}") from e
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            f"image too large{where}: {w}x{h} = {w * h:,} pixels, over the cap of {max_pixels:,} (max_pixels)"
        )
    return img


def load_image(img: Image.Image, max_side: int | None = None, image_id: str | None = None) -> Image.Image:
    """Decode an image from :func:`open_image`; with ``max_side``, a larger one comes back downscaled so that its
    longer side is ``max_side`` (aspect ratio kept), decoded at reduced scale where the format allows.

    Raises:
        ImageDecodeError: truncated or corrupt pixel data.
    """
    try:
        if max_side is not None and max(img.size) > max_side:
            return _load_reduced(img, max_side)
        img.load()  # decode now, so truncation surfaces here and not inside a transform
        return img
    except Exception as e:
        raise ImageDecodeError(f"cannot decode image{_where(image_id)}: {e}") from e


def _load_reduced(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if img.format == "JPEG":  # DCT scaling in the decoder; keeps >= 2x the target for the final filter
        img.draft(img.mode, (2 * target[0], 2 * target[1]))
    img.load()
    img = working_mode(img)
    factor = min(img.width // target[0], img.height // target[1]) // 2
    if factor >= 2:  # integer box reduction (premultiplied for RGBA/LA), then a fair filter over the rest
        img = img.reduce(factor)
    return img.resize(target, Image.Resampling.LANCZOS)


def decode_image(
    data: bytes,
    image_id: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> Image.Image:
    """Decode PNG/JPEG (or any PIL-readable) bytes into a fully loaded PIL image (see :func:`open_image` and
    :func:`load_image`).

    Raises:
        ImageTooLargeError: over ``max_pixels``, checked before decoding.
        ImageDecodeError: empty, truncated or unrecognised bytes.
    """
    return load_image(open_image(data, image_id, max_pixels), max_side, image_id)


def working_mode(img: Image.Image) -> Image.Image:
    """``img`` in a mode that resamples and re-encodes as PNG without loss of meaning: palettes expanded
    (resizing a palette image is nearest-neighbour), transparency kept as an alpha channel, CMYK/1-bit widened."""
    if has_alpha(img):
        return img if img.mode in ("RGBA", "LA") else img.convert("LA" if img.mode in ("L", "La") else "RGBA")
    if img.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img.convert("L") if img.mode == "1" else img


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of a PIL image (deterministic for identical pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
