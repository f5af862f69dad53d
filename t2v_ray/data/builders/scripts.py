"""Writing systems for the glyph library, grouped into families (the higher ranks of the glyph taxonomy).

Each script lists Unicode ranges and the general categories that count as its letters. Bicameral scripts use one
case only, because some fonts draw lowercase as small capitals and the two cases would then collide. Large
syllabaries keep one vowel order (``name_suffix``) so a class is a consonant shape, not a 300-way syllabary.
Which scripts end up in a library depends on the fonts installed: see ``glyphs.plan_scripts``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    """One script: ``family`` is its parent node in the taxonomy."""

    name: str
    family: str
    ranges: tuple[tuple[int, int], ...]
    categories: tuple[str, ...] = ("Lo",)
    name_suffix: str | None = None

    def letters(self) -> list[str]:
        """Characters of the script that count as letters, in code point order."""
        out = []
        for lo, hi in self.ranges:
            for cp in range(lo, hi + 1):
                ch = chr(cp)
                if unicodedata.category(ch) not in self.categories:
                    continue
                if self.name_suffix and not unicodedata.name(ch, "").endswith(self.name_suffix):
                    continue
                out.append(ch)
        return out


def _s(
    name: str, family: str, *ranges: tuple[int, int], cats: tuple[str, ...] = ("Lo",), suffix=None
) -> Script:
    return Script(name, family, tuple(ranges), cats, suffix)


UPPER = ("Lu",)
LOWER = ("Ll",)

SCRIPTS: tuple[Script, ...] = (
    # European alphabets
    _s("Latin", "European", (0x41, 0x5A), cats=UPPER),
    _s("Greek", "European", (0x391, 0x3A9), cats=UPPER),
    _s("Cyrillic", "European", (0x410, 0x42F), cats=UPPER),
    _s("Armenian", "European", (0x531, 0x556), cats=UPPER),
    _s("Georgian", "European", (0x10D0, 0x10F0), cats=LOWER),
    _s("Coptic", "European", (0x2C80, 0x2CB1), cats=UPPER),
    _s("Glagolitic", "European", (0x2C00, 0x2C2E), cats=UPPER),
    _s("Runic", "European", (0x16A0, 0x16EA)),
    _s("Ogham", "European", (0x1681, 0x169A)),
    _s("Gothic", "European", (0x10330, 0x1034A), cats=("Lo", "Nl")),
    _s("Old-Italic", "European", (0x10300, 0x1031F)),
    # Middle-Eastern abjads
    _s("Hebrew", "Semitic", (0x5D0, 0x5EA)),
    _s("Arabic", "Semitic", (0x627, 0x64A)),
    _s("Syriac", "Semitic", (0x710, 0x72F)),
    _s("Samaritan", "Semitic", (0x800, 0x815)),
    _s("Mandaic", "Semitic", (0x840, 0x858)),
    _s("Phoenician", "Semitic", (0x10900, 0x10915)),
    _s("Imperial-Aramaic", "Semitic", (0x10840, 0x10855)),
    _s("Old-South-Arabian", "Semitic", (0x10A60, 0x10A7C)),
    _s("Ugaritic", "Semitic", (0x10380, 0x1039D)),
    _s("Thaana", "Semitic", (0x780, 0x7A5)),
    # Brahmic, north
    _s("Devanagari", "Brahmic-north", (0x905, 0x939)),
    _s("Bengali", "Brahmic-north", (0x985, 0x9B9)),
    _s("Gurmukhi", "Brahmic-north", (0xA05, 0xA39)),
    _s("Gujarati", "Brahmic-north", (0xA85, 0xAB9)),
    _s("Oriya", "Brahmic-north", (0xB05, 0xB39)),
    _s("Tibetan", "Brahmic-north", (0xF40, 0xF6C)),
    # Brahmic, south
    _s("Tamil", "Brahmic-south", (0xB85, 0xBB9)),
    _s("Telugu", "Brahmic-south", (0xC05, 0xC39)),
    _s("Kannada", "Brahmic-south", (0xC85, 0xCB9)),
    _s("Malayalam", "Brahmic-south", (0xD05, 0xD3A)),
    _s("Sinhala", "Brahmic-south", (0xD85, 0xDC6)),
    # Southeast Asian
    _s("Thai", "Southeast-Asian", (0xE01, 0xE2E)),
    _s("Lao", "Southeast-Asian", (0xE81, 0xEAE)),
    _s("Khmer", "Southeast-Asian", (0x1780, 0x17A2)),
    _s("Myanmar", "Southeast-Asian", (0x1000, 0x102A)),
    _s("Balinese", "Southeast-Asian", (0x1B05, 0x1B33)),
    _s("Javanese", "Southeast-Asian", (0xA984, 0xA9B2)),
    _s("Sundanese", "Southeast-Asian", (0x1B83, 0x1BA0)),
    _s("Buginese", "Southeast-Asian", (0x1A00, 0x1A16)),
    _s("Tai-Viet", "Southeast-Asian", (0xAA80, 0xAAAF)),
    # East Asian
    _s("Hiragana", "East-Asian", (0x3042, 0x3093)),
    _s("Katakana", "East-Asian", (0x30A2, 0x30F3)),
    _s("Bopomofo", "East-Asian", (0x3105, 0x312F)),
    _s("Hangul-jamo", "East-Asian", (0x3131, 0x3163)),
    _s("Mongolian", "East-Asian", (0x1820, 0x1842)),
    _s("Yi", "East-Asian", (0xA000, 0xA48C), suffix="IT"),
    # African
    _s("Ethiopic", "African", (0x1200, 0x1357), suffix="A"),
    _s("Tifinagh", "African", (0x2D30, 0x2D67)),
    _s("NKo", "African", (0x7CA, 0x7EA)),
    _s("Vai", "African", (0xA500, 0xA60B), suffix="EE"),
    _s("Bamum", "African", (0xA6A0, 0xA6E5)),
    _s("Osmanya", "African", (0x10480, 0x1049D)),
    _s("Adlam", "African", (0x1E900, 0x1E921), cats=UPPER),
    # Americas
    _s("Cherokee", "American", (0x13A0, 0x13F4), cats=UPPER),
    _s("Canadian-Syllabics", "American", (0x1401, 0x166C), suffix="A"),
    _s("Osage", "American", (0x104B0, 0x104D3), cats=UPPER),
    _s("Deseret", "American", (0x10400, 0x10427), cats=UPPER),
    # Ancient scripts
    _s("Linear-B", "Ancient", (0x10000, 0x1005D)),
    _s("Cypriot", "Ancient", (0x10800, 0x10838)),
    _s("Old-Persian", "Ancient", (0x103A0, 0x103C3)),
    _s("Old-Turkic", "Ancient", (0x10C00, 0x10C48)),
    _s("Carian", "Ancient", (0x102A0, 0x102D0)),
    _s("Lycian", "Ancient", (0x10280, 0x1029C)),
    _s("Lydian", "Ancient", (0x10920, 0x10939)),
    _s("Meroitic", "Ancient", (0x10980, 0x1099F)),
    _s("Egyptian", "Ancient", (0x13000, 0x1303F)),
    _s("Cuneiform", "Ancient", (0x12000, 0x1203F)),
)

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(s.family for s in SCRIPTS))
ATTRIBUTE_SCRIPTS = ("Latin", "Greek", "Cyrillic")  # the only pools with enough fonts of each style
