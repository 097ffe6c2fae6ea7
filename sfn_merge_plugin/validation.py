"""Value checks that live with a parameter's type: argparse types for the ``sfn`` commands, and the
helpers the recipe checks share (finite numbers, ASCII selectors, closest valid key).

An argparse type raising ``argparse.ArgumentTypeError`` makes argparse print one line
(``sfn CMD: error: argument --x: ...``) and exit 2, before any work starts.
"""

from __future__ import annotations

import argparse
import difflib
import math
import unicodedata


def _number(text: str, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def number(lo=None, hi=None, kind=float, lo_open: bool = False):
    """An argparse type: a finite ``kind`` in [lo, hi] (``lo_open``: lo itself excluded)."""

    def parse(text: str):
        value = _number(text, kind)
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"{text} is too small: it must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{text} is too large: it must be <= {hi}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid <name> value"
    return parse


def check_finite(value, what: str, lo=None, hi=None) -> str | None:
    """None when ``value`` is a finite number in [lo, hi]; else the problem, in words."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{what} must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"{what} must be a finite number, got {value!r}"
    if lo is not None and value < lo:
        return f"{what} must be >= {lo}, got {value!r}"
    if hi is not None and value > hi:
        return f"{what} must be <= {hi}, got {value!r}"
    return None


def non_ascii(text: str, what: str) -> str | None:
    """None for pure ASCII; else a message naming the first non-ASCII character (a look-alike letter)."""
    for i, ch in enumerate(str(text)):
        if ord(ch) > 127:
            name = unicodedata.name(ch, "unknown character")
            return (f"{what} {text!r} holds the non-ASCII character {ch!r} (U+{ord(ch):04X} {name}) at position "
                    f"{i + 1}; it looks like a Latin letter but matches nothing: retype it in ASCII")
    return None


def closest(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices``, or ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
