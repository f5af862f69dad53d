"""Transparency compositing, shared by the data layer (decoding) and the probe transforms.

It sits outside ``data/`` and ``probes/`` and imports only Pillow, so both can use it without an upward import
or a torch import. ``convert("RGB")`` alone drops the alpha channel: black line art on a transparent background
becomes black on black. :func:`flatten` composites onto a background first.
"""

from __future__ import annotations

from PIL import Image, ImageColor

DEFAULT_BACKGROUND = "white"
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

Background = str | tuple[int, int, int]


def has_alpha(img: Image.Image) -> bool:
    """True for modes with an alpha channel and for palette/L/RGB images with a transparent colour."""
    return img.mode in ALPHA_MODES or "transparency" in img.info


def flatten(img: Image.Image, mode: str = "RGB", background: Background = DEFAULT_BACKGROUND) -> Image.Image:
    """``img`` converted to ``mode``, transparency composited onto ``background`` first (colour name or RGB).

    out = a·fg + (1 − a)·bg per pixel, with a the alpha in [0, 1]. Modes that hold alpha (``RGBA``, ``LA``) keep it.
    """
    if mode in ("RGBA", "LA") or not has_alpha(img):
        return img if img.mode == mode else img.convert(mode)
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*_rgb(background), 255))
    out = Image.alpha_composite(base, rgba).convert("RGB")
    return out if mode == "RGB" else out.convert(mode)


def _rgb(background: Background) -> tuple[int, int, int]:
    if isinstance(background, str):
        return ImageColor.getrgb(background)[:3]
    r, g, b = (int(v) for v in background)
    return r, g, b
