"""Symbols as names of files and ids: any ticker the data holds (`BRK.B`, `BF/B`, `0700`,
`ÄBC`, `AB C`) maps to a path- and id-safe part, and a job refuses only what cannot be
named that way."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_SYMBOL_CHARS = 32


def safe_symbol(symbol: str) -> str:
    """A symbol as a path / id part: `BRK.B` -> `BRK_B`, `^GSPC` -> `_GSPC`, `BF/B` ->
    `BF_B`. Runs of `_` collapse and a trailing `_` goes, so `__` only ever separates the
    parts of a unit id, and no part is `.` or `..` or holds a `/`."""
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9-]", "_", symbol)).rstrip("_")
    if not safe.strip("_-"):
        raise ValueError(f"symbol {symbol!r} {_unnamed(symbol)}")
    return safe


def _unnamed(symbol: str) -> str:
    """Why `symbol` names no file: it has no ASCII letter or digit. `日本株` and `ÄÖ` have
    letters, only not ASCII ones; "has no letter or digit" was wrong of them."""
    why = "has no ASCII letter or digit (A-Z, a-z, 0-9) to name its files by"
    if any(c.isalnum() for c in symbol):
        why += ": its letters and digits are not ASCII, and file names keep only ASCII ones"
    return why


def name_clashes(symbols: Iterable[str]) -> dict[str, str]:
    """symbol -> the earlier, different symbol of `symbols` whose safe name it shares
    (`BRK/B` -> `BRK.B`: both `BRK_B`); the first of each name keeps it."""
    named: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for symbol in symbols:
        first = named.setdefault(safe_symbol(symbol), symbol)
        if first != symbol:
            clashes[symbol] = first
    return clashes


def symbol_problem(symbol: object) -> str | None:
    """Why `symbol` cannot be a job's symbol, or None: it must be text of 1-32 printable
    characters, without spaces at either end, with a letter or digit to name files by."""
    if isinstance(symbol, bool | int | float):  # YAML: 0700 is octal 448, ON/NO booleans
        kind = type(symbol).__name__
        return (f"a symbol is text, and this is {'an' if kind[0] in 'aeiou' else 'a'} {kind}: "
                "in YAML, quote symbols that read as numbers or booleans ('0700', which YAML "
                "reads as the octal 448; 'ON', 'NO')")
    if not isinstance(symbol, str) or not symbol:
        return "a symbol is non-empty text"
    if len(symbol) > MAX_SYMBOL_CHARS:
        return f"longer than {MAX_SYMBOL_CHARS} characters"
    if not symbol.isprintable() or symbol != symbol.strip():
        return "holds control characters or leading/trailing spaces"
    if not re.sub(r"[^A-Za-z0-9]", "", symbol):
        return _unnamed(symbol)
    return None
