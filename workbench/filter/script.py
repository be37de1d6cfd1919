"""Script check: the share of a text's letters written in its language's expected script(s).

Letters are counted with the Unicode ``Script`` property (the ``regex`` package); digits,
punctuation, symbols and spaces do not count. ISO 15924 codes map to Unicode script names through
:data:`workbench.languages.SCRIPT_UNICODE_NAMES` (``Jpan`` = Han + Hiragana + Katakana). A text
with no letters at all (a number, a formula) has share ``None`` and is judged by the rules only.

Example: ``script_share("ሰላም hello", ("Ethi",))`` -> 0.4 (3 of 8 letters are Ethiopic).
``words("የሰው፡ልጅ፡ሁሉ")`` -> 3 words (the Ethiopic wordspace separates words).
"""

from __future__ import annotations

from functools import lru_cache

import regex

from workbench.languages import SCRIPT_UNICODE_NAMES

_NON_LETTERS = regex.compile(r"\P{L}+")
# Letters with their combining marks (Indic and Khmer vowel signs are marks, not letters), and the
# visible characters: everything but white space and format characters (ZWSP, ZWNJ, ...).
_TEXT_LETTER = regex.compile(r"[\p{L}\p{M}]")
_VISIBLE = regex.compile(r"[^\s\p{Cf}]")
# Word separators besides white space: the Ethiopic wordspace U+1361 (፡) and the Ethiopic
# punctuation U+1362-U+1368 (። ፣ ፤ ፥ ፦ ፧ ፨), which formal Amharic writes between words without spaces.
_SCRIPT_SEPARATORS = regex.compile(r"[\u1361-\u1368]")
_WORD = regex.compile(r"[^\s\u1361-\u1368]+")


def words(text: str) -> list[str]:
    """White-space words, also split at script-specific word separators (Ethiopic ፡ and punctuation)."""
    if _SCRIPT_SEPARATORS.search(text) is None:
        return text.split()  # the common case, at str.split speed
    return _WORD.findall(text)


@lru_cache(maxsize=256)
def _script_pattern(scripts: tuple[str, ...]) -> regex.Pattern:
    names = sorted({name for code in scripts for name in SCRIPT_UNICODE_NAMES[code]})
    alternatives = "".join(rf"\p{{Script={name}}}" for name in names)
    return regex.compile(rf"[^{alternatives}]+")  # runs of letters outside the scripts


def letters_of(text: str) -> str:
    """The text's letters (``\\p{L}``) alone, in order: one pass the letter count, the script share
    and the no_text check all read (the filter computes it once per field)."""
    return _NON_LETTERS.sub("", text)


def letter_count(text: str) -> int:
    return len(_NON_LETTERS.sub("", text))


def text_letters(text: str) -> tuple[int, int]:
    """(letters and combining marks, visible characters) of ``text``: how much of it is text."""
    return len(_TEXT_LETTER.findall(text)), len(_VISIBLE.findall(text))


def script_share(text: str, scripts: tuple[str, ...], letters: str | None = None) -> float | None:
    """Share of letters (``\\p{L}``) that belong to one of ``scripts``; None when there are none.
    ``letters``: :func:`letters_of` ``text`` when already known."""
    letters = _NON_LETTERS.sub("", text) if letters is None else letters
    if not letters:
        return None
    inside = _script_pattern(tuple(scripts)).sub("", letters)
    return len(inside) / len(letters)
