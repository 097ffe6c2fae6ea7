"""Are two extracted answers the same mathematical object? A normalised string match, two number-spelling
rules (thousands separators, a decimal comma), then math-verify's ``parse`` + ``verify`` with the options of
``MathOptions``. ``grading.grade`` is the public entry point."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from sfn_merge_plugin.grading_extract import _TEXT_CMD_RE


@dataclass(frozen=True)
class MathOptions:
    """math-verify ``verify`` options exposed by ``grading.grade``; the defaults are math-verify's own and fit
    AIME / MATH-500, whose problems ask for exact forms and name their variables."""

    float_rounding: int = 6  # decimal places a decimal prediction is rounded to before comparing (0.333333 = 1/3; 0.3333 != 1/3)
    strict: bool = True  # variables must match (f(x) != f(y)) and a set never equals a tuple
    allow_set_relation_comp: bool = False  # also accept an inequality for an interval GOLD (x in [-2,7] vs -2<=x<=7); an interval prediction for an inequality gold is always compared


DEFAULT_MATH_OPTIONS = MathOptions()

_DELIMITED_RE = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")  # \$ is a dollar sign, not math
_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_POINT_DECIMAL_RE = re.compile(r"-?\d*\.\d+")
_COMMA_DECIMAL_RE = re.compile(r"-?\d+,\d+")
_ROOT_SHORTHAND_RE = re.compile(r"\\sqrt\s*\[([^\]]+)\]\s*([0-9A-Za-z])")  # \sqrt[3]2 -> \sqrt[3]{2}


def normalize_answer(text: str) -> str:
    """A canonical string for the fast exact-match path: no spacing, ``$``, ``\\left``, degree signs,
    ``\\text{}`` wrappers, ``{,}`` / thousands commas; ``\\dfrac``/``\\tfrac`` -> ``\\frac``; ``\\sqrt[3]2`` ->
    ``\\sqrt[3]{2}``."""
    s = str(text).strip()
    s = re.sub(r"^\$+|\$+$", "", s)
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s)
    s = re.sub(r"\\(?:left|right|displaystyle)\b", "", s)
    s = re.sub(r"\\[!,;: ]|~", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    for _ in range(3):
        s = _TEXT_CMD_RE.sub(r"\1", s)
    s = _ROOT_SHORTHAND_RE.sub(r"\\sqrt[\1]{\2}", s)
    s = re.sub(r"\s+", "", s)
    s = s.replace("{,}", "")
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    return s.rstrip(".")


def _same_decimal_comma(a: str, b: str) -> bool:
    """``1000,99`` vs ``1000.99``: one side a point decimal, the other the same digits with a comma that is not a
    thousands separator. Only a single number against a single number: ``2,5`` stays the list 2, 5 otherwise."""
    for point, comma in ((a, b), (b, a)):
        if _POINT_DECIMAL_RE.fullmatch(point) and _COMMA_DECIMAL_RE.fullmatch(comma) and not _THOUSANDS_RE.fullmatch(comma):
            return float(point) == float(comma.replace(",", "."))
    return False


def _timeout() -> int | None:
    # math-verify's timeout uses signal.alarm, which only works in the main thread
    return 5 if threading.current_thread() is threading.main_thread() else None


def _prepare(expr: str) -> str:
    """What math-verify is given: an answer with math delimiters or a box as written (math-verify finds the
    math in "Answer $9$", "$12$ and $13$"), any other inside ``\\boxed{}``; roots and ``{,}`` normalised."""
    s = _ROOT_SHORTHAND_RE.sub(r"\\sqrt[\1]{\2}", expr)
    s = re.sub(r"\s*\{\s*,\s*\}\s*", "", s)  # 14{,}916, 14 {, }916
    stripped = s.strip()
    if _THOUSANDS_RE.fullmatch(stripped):
        s = stripped.replace(",", "")
    return s if _DELIMITED_RE.search(s) else f"\\boxed{{{s}}}"


def _parse(expr: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(_prepare(expr), [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=_timeout())


def math_equal(pred: str, gold: str, options: MathOptions = DEFAULT_MATH_OPTIONS) -> bool:
    """Are two extracted answers the same mathematical object? (string match, decimal comma, then math-verify's
    ``verify(gold, pred, **options)``; math-verify's comparison is not symmetric, the gold goes first)."""
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    if _same_decimal_comma(normalize_answer(pred), normalize_answer(gold)):
        return True
    try:
        from math_verify import verify

        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, float_rounding=options.float_rounding, strict=options.strict,
                           allow_set_relation_comp=options.allow_set_relation_comp, timeout_seconds=_timeout()))
    except Exception:  # a malformed answer that crashes the parser is simply not equal
        return False
