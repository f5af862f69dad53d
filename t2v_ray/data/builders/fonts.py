"""Installed fonts: where they are, which characters they cover (cmap), and their style attributes.

Attributes come from the font's own metadata (OS/2 weight, width and selection flags, ``post`` fixed pitch,
PANOSE) and, where that metadata is known to be unreliable (width classes, serif style in URW/TeX Gyre fonts,
which leave PANOSE empty), from the family name.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/share/texmf/fonts/opentype", "/usr/local/share/fonts")
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")

_SANS_WORDS = ("sans", "heros", "adventor", "gothic", "bright", "grotesk", "arial", "helvet")
_SERIF_WORDS = (
    "serif",
    "roman",
    "bonum",
    "pagella",
    "schola",
    "termes",
    "bookman",
    "c059",
    "p052",
    "didot",
    "times",
)
_MONO_WORDS = ("mono", "courier", "typewriter", "cursor", "code", "fixed")
_CONDENSED_WORDS = ("condensed", "narrow", "compressed", " cn")
_EXPANDED_WORDS = ("expanded", "extended", "wide")


@dataclass(frozen=True)
class FontInfo:
    """One face of one font file.

    Attributes:
        key: stable identifier across machines (file name + face index), used in image ids.
        style: "serif" | "sans" | "mono" | "" (unknown).
        width: "condensed" | "normal" | "expanded".
    """

    key: str
    path: str
    index: int
    family: str
    subfamily: str
    weight: int
    italic: bool
    style: str
    width: str
    codepoints: frozenset[int]

    def covers(self, ch: str) -> bool:
        return ord(ch) in self.codepoints

    @property
    def bold(self) -> bool:
        return self.weight >= 600


def find_font_files(dirs: tuple[str, ...] | list[str] = DEFAULT_FONT_DIRS) -> list[str]:
    """All font files under ``dirs``, sorted by file name then path (stable across install orders)."""
    found = set()
    for d in dirs:
        for ext in FONT_EXTENSIONS:
            found.update(glob.glob(os.path.join(d, "**", f"*{ext}"), recursive=True))
    return sorted(found, key=lambda p: (os.path.basename(p), p))


def _has(text: str, words: tuple[str, ...]) -> bool:
    return any(w in text for w in words)


def classify_style(
    name: str, fixed_pitch: bool, panose_family: int, serif_style: int, proportion: int
) -> str:
    """serif / sans / mono from metadata, names first where PANOSE is commonly left empty."""
    name = f" {name.lower()} "
    if fixed_pitch or proportion == 9 or _has(name, _MONO_WORDS):
        return "mono"
    if _has(name, _SANS_WORDS):
        return "sans"
    if _has(name, _SERIF_WORDS):
        return "serif"
    if panose_family == 2 and 2 <= serif_style <= 10:
        return "serif"
    if panose_family == 2 and 11 <= serif_style <= 13:
        return "sans"
    return ""


def classify_width(name: str) -> str:
    """Width from the name: OS/2 width classes are wrong in several installed fonts (e.g. 4 on normal faces)."""
    name = f" {name.lower()} "
    if _has(name, _CONDENSED_WORDS):
        return "condensed"
    if _has(name, _EXPANDED_WORDS):
        return "expanded"
    return "normal"


def read_font(path: str, index: int = 0) -> FontInfo | None:
    """Metadata and cmap of one face, or None when fontTools cannot read it."""
    from fontTools.ttLib import TTFont

    try:
        f = TTFont(path, lazy=True, fontNumber=index)
        cmap = frozenset((f.getBestCmap() or {}).keys())
        names = f["name"]
        family = names.getDebugName(16) or names.getDebugName(1) or os.path.basename(path)
        sub = names.getDebugName(17) or names.getDebugName(2) or ""
        os2 = f.get("OS/2")
        post = f.get("post")
    except Exception:
        return None
    full = f"{family} {sub} {os.path.basename(path)}"
    italic_angle = float(getattr(post, "italicAngle", 0.0) or 0.0)
    sel = int(getattr(os2, "fsSelection", 0) or 0)
    pan = getattr(os2, "panose", None)
    return FontInfo(
        key=f"{os.path.basename(path)}#{index}",
        path=path,
        index=index,
        family=family,
        subfamily=sub,
        weight=int(getattr(os2, "usWeightClass", 400) or 400),
        italic=bool(sel & 1) or italic_angle != 0.0 or _has(sub.lower(), ("italic", "oblique", "slanted")),
        style=classify_style(
            full,
            bool(getattr(post, "isFixedPitch", 0)),
            int(getattr(pan, "bFamilyType", 0) or 0),
            int(getattr(pan, "bSerifStyle", 0) or 0),
            int(getattr(pan, "bProportion", 0) or 0),
        ),
        width=classify_width(full),
        codepoints=cmap,
    )


def discover_fonts(dirs: tuple[str, ...] | list[str] = DEFAULT_FONT_DIRS) -> list[FontInfo]:
    """Read every font file under ``dirs`` (first face of collections too); duplicates by key are dropped.

    Cached per process on the list of files (a rescan of ~500 cmaps costs ~3 s; repeated builds skip it).
    """
    return list(_discover(tuple(find_font_files(dirs))))


@lru_cache(maxsize=4)
def _discover(paths: tuple[str, ...]) -> tuple[FontInfo, ...]:
    out: dict[str, FontInfo] = {}
    for path in paths:
        info = read_font(path)
        if info is not None and info.key not in out and info.codepoints:
            out[info.key] = info
    return tuple(out.values())
