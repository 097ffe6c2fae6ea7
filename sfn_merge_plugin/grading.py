"""Deterministic answer grading for AIME, MATH-500 and GPQA responses (public API: ``grade``).

The response is split at the last end-of-thinking marker and only the ANSWER part is graded: its last
non-empty ``\\boxed{}`` (nested braces read properly; an empty ``\\boxed{}`` is skipped), else its last
"Final Answer:" line. Math answers are compared with math-verify (after a normalised string match), AIME
answers as integers, GPQA answers as option letters (from the box or the "Answer: X" line, whichever comes
last). No extractable answer means wrong (never a default letter, never "the last number").
``paper_lenient`` reproduces the paper's looser rule so its inflation can be measured.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

import re
import threading

KINDS = ("math", "aime", "gpqa")

# End-of-thinking markers of the supported families: R1-Distill / Qwen3, s1. The answer follows the last one.
THINK_END_MARKERS = ("</think>", "<|im_start|>answer")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_NOBRACE_RE = re.compile(r"\\boxed +([^\s{$][^\s$]*)")  # "\boxed 5"
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is)?\s*\**\s*[:：]?\s*\**[ \t]*([^\n]*)", re.IGNORECASE)
_LETTERS = "ABCD"
_GPQA_BOX_RE = re.compile(r"^\(?\s*([A-Da-d])\s*\)?(?:$|[\s.:)]\s*.*)$", re.DOTALL)
# LaTeX wrappers whose argument is the text itself: \text{B}, \mathrm{(D)}, \textbf{C}
_TEXT_CMDS = r"(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)"
_TEXT_CMD_RE = re.compile(r"\\" + _TEXT_CMDS + r"\s*\{([^{}]*)\}")
# "Answer: C", "The answer is (C)", "Final Answer: **B**", "answer is: $\mathrm{(D)}$"; then, only if no such
# line and no box, "the correct option is D" (a bare "option A is wrong" is never an answer)
_LETTER_OPEN = r"(?:[\s:*$({\[]|\\[(\[{])*"  # spaces, colons, bold, $, (, [, {, \( \[ \{
_LETTER_TAIL = _LETTER_OPEN + r"(?:\\" + _TEXT_CMDS + r"\s*\{" + _LETTER_OPEN + r")?([A-D])\b(?![-'])"
_GPQA_TEXT_RES = (
    re.compile(r"(?i:answer)\s*(?i:is|:|=)?" + _LETTER_TAIL),
    re.compile(r"(?i:correct|right)\s+(?i:answer|option|choice)\s*(?i:is|:|=)?\s*(?i:option|choice)?" + _LETTER_TAIL),
)


class GradingError(SfnError):
    """A bad call of the grader (unknown kind, unusable gold), not a wrong answer."""


# ---------------------------------------------------------------------------------------------- extraction


def split_thinking(response: str, markers=THINK_END_MARKERS) -> tuple[str, str]:
    """(thinking, answer): the text before and after the LAST end-of-thinking marker; ("", response) if none."""
    best, best_len = -1, 0
    for marker in markers:
        i = response.rfind(marker)
        if i > best:
            best, best_len = i, len(marker)
    if best < 0:
        return "", response
    return response[:best], response[best + best_len:]


def _boxes(text: str) -> list[tuple[int, str]]:
    """(position, content) of every COMPLETE box; an unclosed box (truncated trace) is skipped."""
    found = []
    for match in _BOX_RE.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            ch = text[i]
            if ch in "{}" and text[i - 1] == "\\":
                continue  # \{ and \} are literal braces (sets)
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    found.append((match.start(), text[start:i].strip()))
                    break
    found += [(m.start(), m.group(1).strip()) for m in _BOX_NOBRACE_RE.finditer(text)]
    return sorted(found)


def boxed_contents(text: str) -> list[str]:
    """The contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, in order."""
    return [content for _, content in _boxes(text)]


def _last_box(text: str) -> tuple[int, str] | None:
    """(position, content) of the last complete, non-empty box; empty ``\\boxed{}`` are skipped."""
    boxes = [box for box in _boxes(text) if box[1]]
    return boxes[-1] if boxes else None


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty box in ``text``, or None (an empty ``\\boxed{}``, such as
    an echo of the prompt's "within \\boxed{}", is skipped: ``\\boxed{3} ... \\boxed{}`` answers 3)."""
    box = _last_box(text)
    return box[1] if box else None


def final_answer_line(text: str) -> str | None:
    """What follows the last "Final Answer:" (same line, else the next non-empty line), cleaned; or None."""
    matches = list(_FINAL_RE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    value = match.group(1).strip()
    if not value.strip("*").strip():
        rest = [line.strip() for line in text[match.end():].splitlines() if line.strip()]
        value = rest[0] if rest else ""
    value = re.sub(r"^(?:the\s+final\s+answer\s+is|the\s+answer\s+is)\s*:?\s*", "", value, flags=re.IGNORECASE)
    value = re.sub(r"\.?\s*I hope it is correct\.?$", "", value, flags=re.IGNORECASE)
    math = re.findall(r"\$+([^$]+)\$+", value)
    if math:
        value = math[-1]
    value = value.strip().strip("*").strip().rstrip(".").strip()
    return value or None


def extract_answer(response: str, kind: str = "math") -> str | None:
    """The answer ``grade`` would judge: for math/aime the raw answer string, for gpqa the letter; or None."""
    _check_kind(kind)
    _, answer = split_thinking(response)
    if kind == "gpqa":
        return _gpqa_letter(answer)
    boxed = last_boxed(answer)
    return boxed if boxed is not None else final_answer_line(answer)


def _gpqa_letter(answer: str) -> str | None:
    """The letter of the last non-empty box or the last "answer is X" line, whichever comes LAST in the text
    (the prompt asks for "Answer: $LETTER" as the last line, so a later line overrides an earlier box);
    "the correct option is X" only when there is neither."""
    found = []  # (position, letter)
    box = _last_box(answer)
    if box is not None:
        inner = _TEXT_CMD_RE.sub(r"\1", box[1]).strip().strip("*$").strip()
        match = _GPQA_BOX_RE.match(inner)
        if match:
            found.append((box[0], match.group(1).upper()))
    strong, weak = _GPQA_TEXT_RES
    lines = list(strong.finditer(answer))
    if lines:
        found.append((lines[-1].start(1), lines[-1].group(1)))
    if not found:
        lines = list(weak.finditer(answer))
        if lines:
            found.append((lines[-1].start(1), lines[-1].group(1)))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------- comparison


def normalize_answer(text: str) -> str:
    """A canonical string for the fast exact-match path: no spacing, ``$``, ``\\left``, degree signs,
    ``\\text{}`` wrappers; ``\\dfrac``/``\\tfrac`` -> ``\\frac``."""
    s = str(text).strip()
    s = re.sub(r"^\$+|\$+$", "", s)
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s)
    s = re.sub(r"\\(?:left|right|displaystyle)\b", "", s)
    s = re.sub(r"\\[!,;: ]|~", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    for _ in range(3):
        s = _TEXT_CMD_RE.sub(r"\1", s)
    s = s.replace("{,}", "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def _timeout() -> int | None:
    # math-verify's timeout uses signal.alarm, which only works in the main thread
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(expr: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"\\boxed{{{expr}}}", [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=_timeout())


def math_equal(pred: str, gold: str) -> bool:
    """Are two extracted answers the same mathematical object? (string match, then math-verify)."""
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    try:
        from math_verify import verify

        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=_timeout()))
    except Exception:  # a malformed answer that crashes the parser is simply not equal
        return False


def _as_integer(text: str) -> int | None:
    s = normalize_answer(text).replace(",", "")
    match = re.fullmatch(r"[+-]?\d+(?:\.0*)?", s)
    return int(float(s)) if match else None


def _check_kind(kind: str):
    if kind not in KINDS:
        raise GradingError(f"unknown grading kind {kind!r}; use one of {', '.join(KINDS)}")


def grade(response: str, gold, kind: str = "math") -> bool:
    """True when ``response`` answers ``gold`` correctly. ``kind``: ``math`` (any LaTeX answer), ``aime``
    (an integer 0-999) or ``gpqa`` (``gold`` is the correct option letter A-D)."""
    _check_kind(kind)
    if gold is None or not str(gold).strip():
        raise GradingError("empty gold answer: check the dataset's answer column")
    gold = str(gold).strip()
    if kind == "gpqa":
        if gold.upper() not in _LETTERS or len(gold) != 1:
            raise GradingError(f"GPQA gold must be the correct option letter A-D, got {gold!r}")
        return extract_answer(response or "", "gpqa") == gold.upper()
    pred = extract_answer(response or "", kind)
    if pred is None:
        return False
    if kind == "aime":
        gold_int = _as_integer(gold)
        if gold_int is None:
            raise GradingError(f"AIME gold must be an integer, got {gold!r}")
        pred_int = _as_integer(pred)
        if pred_int is not None:
            return pred_int == gold_int
        return math_equal(pred, str(gold_int))
    return math_equal(pred, gold)


def paper_lenient(response: str, gold, prompt: str = "") -> bool:
    """The paper's rule, for comparison only: correct when the gold string is a SUBSTRING of any
    ``\\boxed{...}`` (non-greedy, no nesting) anywhere in ``prompt + response`` ("204" matches "2040").

    The paper decoded prompt and response together, so a filled box in the prompt counted too; pass
    ``prompt`` to reproduce that. The lm-eval metric ``paper_lenient`` (``evaluation.metrics``) calls this
    WITHOUT the prompt (lm-eval hands ``process_results`` the document and the response, not the rendered
    prompt), so boxes in the prompt never count there."""
    gold = str(gold).strip()
    return any(gold in box for box in re.findall(r"\\boxed\{(.*?)\}", (prompt or "") + (response or ""), re.DOTALL))
