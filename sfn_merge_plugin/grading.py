"""Deterministic answer grading for AIME, MATH-500 and GPQA responses (public API: ``grade``).

Rules, in the order they apply:

1. Thinking. The response is split at the last end-of-thinking marker (``</think>``, ``<|im_start|>answer``);
   only the ANSWER part after it is graded. No extractable answer means wrong (never a default letter, never
   "the last number" of a truncated trace).
2. Boxes. A box is a complete ``\\boxed{}`` / ``\\fbox{}`` (nested braces read, ``\\{ \\}`` literal, an unclosed
   box of a truncated trace ignored, an empty ``\\boxed{}`` skipped). The final answer is the last box plus the
   boxes just before it joined to it only by punctuation, math delimiters, spacing (``\\quad``), "and" / "or"
   (also inside ``\\text{}``), a part label ("for part (a)") or an assignment label (``y_2 =``): such a group is
   ONE answer, its contents joined with ", " (``\\boxed{1}, \\boxed{2}`` is 1, 2). Any other word or a
   sentence end between two boxes makes the later one a revision: ``\\boxed{3}. Wait, \\boxed{5}`` answers 5.
3. "Final Answer" lines. A label "Final Answer:", "The final answer is", or a "**Final Answer**" heading; its
   value is the rest of the line (else the next non-empty line), cut at "I hope it is correct", at a chat
   token (``<|im_start|>``...) and at the first sentence end outside math; of "<subject> is <answer>" the
   answer is kept ("The largest $n$ is 34." -> 34). The box group and the last Final Answer line compete:
   whichever starts LAST in the text is the answer (``\\boxed{255} ... Final Answer: ... $10,455$`` is 10455),
   except that a line whose value has no digit and no math ("the final answer is correct") never beats a box.
4. Math comparison (``kind="math"``): a normalised string match; thousands separators removed (``12,000,023``,
   ``1{,}000``) and a decimal comma read only number-against-number (``1000,99`` = ``1000.99``; ``2,5`` against a
   list stays the list); ``\\sqrt[3]2`` read as ``\\sqrt[3]{2}``; then math-verify ``verify(gold, pred)``. Answers
   with math delimiters go to math-verify's ``parse`` as written (it finds the math in "Answer $9$"), others
   inside ``\\boxed{}``; a gold written as a solution with a box is read the same way. math-verify's options are
   keyword arguments (``MathOptions``): ``float_rounding=6`` (``0.3333`` is not ``\\frac13``), ``strict=True``
   (``f(x)`` is not ``f(y)``), ``allow_set_relation_comp=False`` (an inequality does not answer an interval
   gold); these are math-verify's defaults and fit AIME / MATH-500, which ask for exact forms.
5. AIME (``kind="aime"``): the gold must be an integer; a prediction that is an integer (``033`` = 33, ``2040``
   != 204) is compared as one, any other with the math rules against the integer.
6. GPQA (``kind="gpqa"``): the gold is the correct letter A-D; the prediction is the letter of the final box
   group (a single box) or of the last "Answer: X" / "answer is (X)" line, whichever comes last; only when
   neither exists "the correct option is X".
7. Bad calls raise ``GradingError`` (an ``SfnError``): an unknown kind, an empty gold (``grade(r, "")``: a
   broken answer column must not silently score every response wrong), a non-integer AIME gold, a GPQA gold
   that is not a letter, an option of the wrong type.

``paper_lenient`` reproduces the paper's looser rule unchanged, so its inflation can be measured.
"""

from __future__ import annotations

import re

from sfn_merge_plugin.errors import SfnError
from sfn_merge_plugin.grading_compare import DEFAULT_MATH_OPTIONS, MathOptions, math_equal, normalize_answer
from sfn_merge_plugin.grading_extract import (
    THINK_END_MARKERS,
    boxed_contents,
    final_answer_line,
    final_box_group,
    gpqa_letter,
    last_boxed,
    math_answer,
    split_thinking,
)

__all__ = [
    "KINDS", "THINK_END_MARKERS", "GradingError", "MathOptions", "boxed_contents", "extract_answer",
    "final_answer_line", "final_box_group", "grade", "last_boxed", "math_equal", "normalize_answer",
    "paper_lenient", "split_thinking",
]

KINDS = ("math", "aime", "gpqa")
_LETTERS = "ABCD"


class GradingError(SfnError):
    """A bad call of the grader (unknown kind, unusable gold, bad option), not a wrong answer."""


def _check_kind(kind: str):
    if kind not in KINDS:
        raise GradingError(f"unknown grading kind {kind!r}; use one of {', '.join(KINDS)}")


def extract_answer(response: str, kind: str = "math") -> str | None:
    """The answer ``grade`` would judge: for math/aime the answer string (a box group joined with ", "), for
    gpqa the letter; or None."""
    _check_kind(kind)
    _, answer = split_thinking(response or "")
    return gpqa_letter(answer) if kind == "gpqa" else math_answer(answer)


def _as_integer(text: str) -> int | None:
    s = normalize_answer(text).replace(",", "")
    match = re.fullmatch(r"[+-]?\d+(?:\.0*)?", s)
    return int(float(s)) if match else None


def _options(float_rounding, strict, allow_set_relation_comp) -> MathOptions:
    if isinstance(float_rounding, bool) or not isinstance(float_rounding, int) or float_rounding < 0:
        raise GradingError(f"float_rounding must be a whole number of decimal places >= 0, got {float_rounding!r}")
    for name, value in (("strict", strict), ("allow_set_relation_comp", allow_set_relation_comp)):
        if not isinstance(value, bool):
            raise GradingError(f"{name} must be True or False, got {value!r}")
    return MathOptions(float_rounding, strict, allow_set_relation_comp)


def grade(
    response: str,
    gold,
    kind: str = "math",
    *,
    float_rounding: int = DEFAULT_MATH_OPTIONS.float_rounding,
    strict: bool = DEFAULT_MATH_OPTIONS.strict,
    allow_set_relation_comp: bool = DEFAULT_MATH_OPTIONS.allow_set_relation_comp,
) -> bool:
    """True when ``response`` answers ``gold`` correctly (rules in the module docstring). ``kind``: ``math``
    (any LaTeX answer), ``aime`` (an integer 0-999) or ``gpqa`` (``gold`` is the correct option letter A-D).
    ``float_rounding``, ``strict``, ``allow_set_relation_comp``: math-verify's ``verify`` options (``MathOptions``
    says what each does), used for math answers; raises ``GradingError`` on an empty gold or a bad call."""
    _check_kind(kind)
    options = _options(float_rounding, strict, allow_set_relation_comp)
    if gold is None or not str(gold).strip():
        raise GradingError("empty gold answer: check the dataset's answer column")
    gold = str(gold).strip()
    if kind == "gpqa":
        if gold.upper() not in _LETTERS or len(gold) != 1:
            raise GradingError(f"GPQA gold must be the correct option letter A-D, got {gold!r}")
        return extract_answer(response, "gpqa") == gold.upper()
    if kind == "aime":
        gold_int = _as_integer(gold)
        if gold_int is None:
            raise GradingError(f"AIME gold must be an integer, got {gold!r}")
    pred = extract_answer(response, kind)
    if pred is None:
        return False
    if kind == "aime":
        pred_int = _as_integer(pred)
        if pred_int is not None:
            return pred_int == gold_int
        return math_equal(pred, str(gold_int), options)
    return math_equal(pred, gold, options)


def paper_lenient(response: str, gold, prompt: str = "") -> bool:
    """The paper's rule, for comparison only: correct when the gold string is a SUBSTRING of any
    ``\\boxed{...}`` (non-greedy, no nesting) anywhere in ``prompt + response`` ("204" matches "2040").

    The paper decoded prompt and response together, so a filled box in the prompt counted too; pass
    ``prompt`` to reproduce that. The lm-eval metric ``paper_lenient`` (``evaluation.metrics``) calls this
    WITHOUT the prompt (lm-eval hands ``process_results`` the document and the response, not the rendered
    prompt), so boxes in the prompt never count there."""
    gold = str(gold).strip()
    return any(gold in box for box in re.findall(r"\\boxed\{(.*?)\}", (prompt or "") + (response or ""), re.DOTALL))
