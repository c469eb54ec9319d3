"""Text hygiene: invisible characters, bidirectional controls and reaction emoji.

- A text is *blank* when it has nothing visible: only white space, Default_Ignorable code
  points (zero-width space, joiners, word joiner, BOM, variation selectors, Hangul fillers,
  tags …) or the braille blank. Such a message is `empty_message`.
- *Bidi controls* (the embeddings, overrides and isolates U+202A–U+202E, U+2066–U+2069, and
  the marks U+200E, U+200F, U+061C) are removed from message bodies — they are invisible, so
  a sender could not find them to take them out, and all they do in a chat line is reorder
  its text — and refused everywhere else (names, reactions, usernames in frames).
- A *reaction* is one RGI emoji (`emoji` package, Unicode's emoji-test.txt): a fully
  qualified emoji as it is, an unqualified or minimally qualified one (U+2764 without
  U+FE0F) as its fully qualified form, so both count as the same reaction.

The two character sets are Unicode properties (Bidi_Control in PropList.txt,
Default_Ignorable_Code_Point in DerivedCoreProperties.txt). They are kept here as tables so
the per-message path needs no library; tests/core/test_names.py checks them against ICU's.
"""

from __future__ import annotations

import re
import unicodedata

import emoji

# Bidi_Control (PropList.txt): ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_BIDI = re.compile(f"[{''.join(sorted(BIDI_CONTROLS))}]")

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt), unassigned ones included as the
# property includes them: they render as nothing.
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # arabic letter mark
    (0x115F, 0x1160),  # hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # khmer inherent vowels
    (0x180B, 0x180F),  # mongolian variation selectors, vowel separator
    (0x200B, 0x200F),  # zero width space, ZWNJ, ZWJ, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, isolates, deprecated formats
    (0x3164, 0x3164),  # hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth hangul filler
    (0xFFF0, 0xFFF8),  # unassigned, default ignorable
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol beams and phrases
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement, unassigned
)
# Visible as nothing although not Default_Ignorable: the braille blank, used as "invisible
# text" precisely because most filters let it through.
BLANK_LOOKING = "\u2800"

_IGNORABLE_CLASS = "".join(
    re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
    for lo, hi in DEFAULT_IGNORABLE
)
_BLANK = re.compile(rf"[\s{_IGNORABLE_CLASS}{BLANK_LOOKING}]*")

_FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: white space and invisible characters only."""
    return _BLANK.fullmatch(text) is not None


def strip_bidi_controls(text: str) -> str:
    return _BIDI.sub("", text)


def first_bidi_control(text: str) -> str | None:
    """'U+202E RIGHT-TO-LEFT OVERRIDE' for the first bidi control in `text`, else None."""
    found = _BIDI.search(text)
    return describe(found.group()) if found else None


def describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}"


def reaction_emoji(value: str) -> str | None:
    """The fully qualified RGI emoji `value` stands for, or None if it is not one emoji."""
    data = emoji.EMOJI_DATA.get(value)
    if data is None or data["status"] < _FULLY_QUALIFIED:  # components (skin tones) alone
        return None
    if data["status"] == _FULLY_QUALIFIED:
        return value
    qualified = emoji.emojize(data["en"])
    found = emoji.EMOJI_DATA.get(qualified)
    return qualified if found is not None and found["status"] == _FULLY_QUALIFIED else None
