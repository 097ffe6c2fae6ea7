"""Text -> comparable words: the same problem written in Unicode or LaTeX, any case or spacing, gives the same words.

s1 (and open-r1 after it) compared lower-cased, whitespace-split text, so ``$\\dfrac{1}{2}$`` and ``½``, or
``π`` and ``\\pi``, never matched. Here both sides go through one normalisation: Unicode compatibility forms
and accents folded, Greek letters and common math symbols spelled as their LaTeX names, LaTeX formatting
commands dropped, thousands separators removed, digits split from letters, punctuation removed.
"""

from __future__ import annotations

import re
import unicodedata

# math symbols -> the LaTeX command name a problem written in LaTeX would use
SYMBOLS = {"×": "times", "·": "cdot", "⋅": "cdot", "÷": "div", "±": "pm", "∓": "mp", "≤": "leq", "≥": "geq",
           "≠": "neq", "≈": "approx", "≡": "equiv", "√": "sqrt", "∞": "infty", "°": "circ", "∈": "in",
           "→": "to", "∑": "sum", "∏": "prod", "∫": "int", "∠": "angle", "△": "triangle", "⊥": "perp",
           "∥": "parallel", "∪": "cup", "∩": "cap", "⊂": "subset", "⊆": "subseteq", "∅": "emptyset",
           "∂": "partial", "∇": "nabla", "ℏ": "hbar", "…": "ldots"}
# LaTeX commands spelled two ways -> one name
ALIASES = {"le": "leq", "ge": "geq", "ne": "neq", "dfrac": "frac", "tfrac": "frac", "cfrac": "frac",
           "dbinom": "binom", "tbinom": "binom", "dots": "ldots", "cdots": "ldots", "lvert": "", "rvert": "",
           "vert": "", "mid": ""}
# LaTeX commands that only format or space: dropped (their braces' content stays)
DROPPED = {"left", "right", "big", "bigl", "bigr", "bigg", "biggl", "biggr", "displaystyle", "textstyle",
           "text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mbox",
           "operatorname", "boldsymbol", "quad", "qquad", "hspace", "vspace", "limits", "nolimits"}
SUPERSCRIPTS = str.maketrans({c: f" {d} " for c, d in zip("⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉", "0123456789" * 2)})


def _symbol_table() -> dict:
    table = {ord(k): f" {v} " for k, v in SYMBOLS.items()}
    for code in range(0x0391, 0x03CA):  # Greek letters -> "alpha", "pi", "omega" (as \alpha, \pi, \Omega)
        name = unicodedata.name(chr(code), "")
        if "GREEK" in name and "LETTER" in name:
            table[code] = f" {name.split()[-1].lower()} "
    table.update({ord(c): "-" for c in "−–—"})
    return table


TABLE = _symbol_table()
COMMAND = re.compile(r"\\([a-z]+)")
FRAC_DIGITS = re.compile(r"\\[dtc]?frac\s*(\d)\s*(\d)")  # \frac12 is \frac{1}{2}
SLASH = re.compile(r"(\d+)\s*[/\u2044]\s*(\d+)")  # 1/2 and the ½ of NFKD ("1⁄2") are \frac{1}{2}
THOUSANDS = re.compile(r"(\d),(?=\d{3}(?!\d))")
WORD = re.compile(r"\d+|[^\W\d_]+")  # runs of digits or of letters: "2x" and "2 x" are the same words
ASCII_WORD = re.compile(r"[0-9]+|[a-z]+")  # the same on case-folded ASCII text, faster


def _command(match: re.Match) -> str:
    name = ALIASES.get(match.group(1), match.group(1))
    return " " if name in DROPPED or not name else f" {name} "


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (see the module docstring)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(SUPERSCRIPTS).translate(TABLE))
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.casefold()
    if "\\" in text:
        text = COMMAND.sub(_command, FRAC_DIGITS.sub(r" frac \1 \2 ", text))
    if "," in text:
        text = THOUSANDS.sub(r"\1", text)
    if "/" in text or "\u2044" in text:
        text = SLASH.sub(r" frac \1 \2 ", text)
    return (ASCII_WORD if text.isascii() else WORD).findall(text)


def normalize_text(text: str) -> str:
    """One canonical string per problem: its normalised words joined by single spaces."""
    return " ".join(words(text))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """The distinct word n-grams of ``tokens`` (none when there are fewer than ``n`` words)."""
    return set(zip(*(tokens[i:] for i in range(n))))
