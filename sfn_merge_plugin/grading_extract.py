"""Where the answer is in a response: the thinking split, ``\\boxed{}`` groups, "Final Answer:" lines, GPQA
letters. Plain text in, plain text out; ``grading.grade`` (the public entry point) compares what this finds."""

from __future__ import annotations

import re

# End-of-thinking markers of the supported families: R1-Distill / Qwen3, s1. The answer follows the last one.
THINK_END_MARKERS = ("</think>", "<|im_start|>answer")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_NOBRACE_RE = re.compile(r"\\boxed +([^\s{$][^\s$]*)")  # "\boxed 5"

# LaTeX wrappers whose argument is the text itself: \text{B}, \mathrm{(D)}, \textbf{C}
_TEXT_CMDS = r"(?:text|textbf|textit|textnormal|mathrm|mathbf|mbox|operatorname)"
_TEXT_CMD_RE = re.compile(r"\\" + _TEXT_CMDS + r"\s*\{([^{}]*)\}")

# What may stand BETWEEN two boxes of one answer (``\boxed{1}, \boxed{2}``, ``\boxed{k=45} \quad \text{and}
# \quad \boxed{n=2}``, ``y_1 = \boxed{..} and y_2 = \boxed{..}``, ``\boxed{..} for part (a) and \boxed{..}``):
# punctuation, math delimiters, spacing, "and"/"or", part labels, an assignment label. Any other word
# ("Wait", "then", "no") or a sentence end separates them: the later box is a revision.
_JOINERS = re.compile(
    r"\s+|\\(?:boxed|fbox)\s*\{\s*\}|[,;&~]|\$|\\[()\[\]]|\\\\|\\(?:q?quad|[,;:! ])|\b(?:and|or)\b"
    r"|(?:\bfor\s+)?(?:\bpart\s*)?\([a-z]\)(?=\W|$)|[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*="
)

# "Final Answer" as a label: "Final Answer: ...", "The final answer is ...", a "**Final Answer**" / "## Final
# Answer" heading line. "... is my final answer." is prose, not a label.
_FINAL_RE = re.compile(
    r"(?:final\s+answer\s*\**\s*(?:is\b|[:：])|(?:^|\n)[ \t#*]*final\s+answer\b[ \t*]*(?=\n|$))\s*\**[:：]?\**[ \t]*([^\n]*)",
    re.IGNORECASE,
)
# where a Final Answer value stops: "I hope it is correct", a chat/special token, a sentence end outside math
_VALUE_END_RE = re.compile(r"I hope it is correct|<\||<｜|</s>|<eos>", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.])")
_LEAD_RE = re.compile(r"^(?:the\s+final\s+answer\s+is|the\s+answer\s+is)\s*:?\s*", re.IGNORECASE)

_GPQA_BOX_RE = re.compile(r"^\(?\s*([A-Da-d])\s*\)?(?:$|[\s.:)]\s*.*)$", re.DOTALL)
# "Answer: C", "The answer is (C)", "Final Answer: **B**", "answer is: $\mathrm{(D)}$"; then, only if no such
# line and no box, "the correct option is D" (a bare "option A is wrong" is never an answer)
_LETTER_OPEN = r"(?:[\s:*$({\[]|\\[(\[{])*"  # spaces, colons, bold, $, (, [, {, \( \[ \{
_LETTER_TAIL = _LETTER_OPEN + r"(?:\\" + _TEXT_CMDS + r"\s*\{" + _LETTER_OPEN + r")?([A-D])\b(?![-'])"
_GPQA_TEXT_RES = (
    re.compile(r"(?i:answer)\s*(?i:is|:|=)?" + _LETTER_TAIL),
    re.compile(r"(?i:correct|right)\s+(?i:answer|option|choice)\s*(?i:is|:|=)?\s*(?i:option|choice)?" + _LETTER_TAIL),
)


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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every COMPLETE box; an unclosed box (truncated trace) is skipped."""
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
                    found.append((match.start(), i + 1, text[start:i].strip()))
                    break
    found += [(m.start(), m.end(), m.group(1).strip()) for m in _BOX_NOBRACE_RE.finditer(text)]
    return sorted(found)


def boxed_contents(text: str) -> list[str]:
    """The contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, in order."""
    return [content for *_, content in _boxes(text)]


def _joined(between: str) -> bool:
    """Is the text between two boxes only joining material (so both boxes are one answer)?"""
    for _ in range(3):
        between = _TEXT_CMD_RE.sub(r" \1 ", between)
    return not _JOINERS.sub("", between)


def final_box_group(text: str) -> tuple[int, list[str]] | None:
    """(start, contents) of the final answer's boxes: the last complete, non-empty box plus the boxes just
    before it that are joined to it only by punctuation, "and"/"or", spacing or labels (``\\boxed{1}, \\boxed{2}``
    is one answer; ``\\boxed{3}. Wait, \\boxed{5}`` answers 5). Empty boxes are skipped, repeats dropped."""
    boxes = [box for box in _boxes(text) if box[2]]
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if box[1] > group[0][0] or not _joined(text[box[1]:group[0][0]]):
            break
        group.insert(0, box)
    contents = list(dict.fromkeys(content for *_, content in group))
    return group[0][0], contents


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty box in ``text``, or None (an empty ``\\boxed{}``, such as
    an echo of the prompt's "within \\boxed{}", is skipped: ``\\boxed{3} ... \\boxed{}`` answers 3)."""
    boxes = [box for box in _boxes(text) if box[2]]
    return boxes[-1][2] if boxes else None


def _outside_math_cut(value: str) -> str:
    """``value`` up to its first sentence end (". " or a final ".") outside ``$...$``."""
    in_math = False
    for i, ch in enumerate(value):
        if ch == "$" and (i == 0 or value[i - 1] != "\\"):
            in_math = not in_math
        elif ch == "." and not in_math and (i + 1 == len(value) or value[i + 1].isspace()):
            return value[:i]
    return value


def _clean_final_value(value: str) -> str | None:
    value = _VALUE_END_RE.split(value, maxsplit=1)[0]
    value = _LEAD_RE.sub("", value.strip().strip("*").strip())
    value = _outside_math_cut(value).strip().strip("*\"'").strip()
    # "The largest $n$ is 34": the answer is what follows the last "is" / "are" outside math
    outside = re.sub(r"\$[^$]*\$", lambda m: "\0" * len(m.group()), value)
    verbs = list(re.finditer(r"\s(?:is|are)\s", outside))
    if verbs and value[verbs[-1].end():].strip():
        value = value[verbs[-1].end():].strip()
    # "Jane started growing Sphere 3 hours ago": prose (no LaTeX) with exactly one number answers that number
    numbers = _NUMBER_RE.findall(value)
    if "$" not in value and "\\" not in value and re.search(r"[A-Za-z]{3}", value) and len(numbers) == 1:
        value = numbers[0]
    value = value.rstrip(".").strip()
    single = re.fullmatch(r"\$+([^$]+)\$+", value)  # one math span: its content ("$12$ and $13$" stays)
    return (single.group(1).strip() if single else value) or None


def final_answer_line(text: str) -> str | None:
    """What follows the last "Final Answer" label (same line, else the next non-empty line), cleaned: cut at "I
    hope it is correct", at a chat token and at the first sentence end; "The final answer is" dropped; of
    "<subject> is <answer>" the answer ("The largest $n$ is 34." -> 34); prose with one number, that number;
    a single ``$...$`` unwrapped (several spans kept: "$12$ and $13$"). Or None."""
    found = final_answer_match(text)
    return found[1] if found else None


def final_answer_match(text: str) -> tuple[int, str] | None:
    """(start, cleaned value) of the last "Final Answer" label that has a value, or None."""
    for match in reversed(list(_FINAL_RE.finditer(text))):
        value = match.group(1).strip()
        if not value.strip("*").strip():
            rest = [line.strip() for line in text[match.end():].splitlines() if line.strip()]
            value = rest[0] if rest else ""
        cleaned = _clean_final_value(value)
        if cleaned:
            return match.start(), cleaned
    return None


def math_answer(answer: str) -> str | None:
    """The math answer of the ANSWER part: the final box group or the last "Final Answer" line, whichever
    starts LAST (``\\boxed{255} ... Final Answer: ... $10,455$`` answers 10,455; ``**Final Answer**\\n\\boxed{5}``
    answers 5); a line whose value has no digit and no math (a word, "correct") never beats a box. Several
    boxes of one group are joined with ", ". None when there is neither."""
    group, line = final_box_group(answer), final_answer_match(answer)
    if group and line and not re.search(r"[\d$\\]", line[1]):
        line = None  # "... the final answer is correct.": a value with no digit and no math never beats a box
    if group and (line is None or group[0] >= line[0]):
        return ", ".join(group[1])
    return line[1] if line else None


def gpqa_letter(answer: str) -> str | None:
    """The letter of the final box group (one box) or the last "answer is X" line, whichever comes LAST in the
    text (the prompt asks for "Answer: $LETTER" as the last line, so a later line overrides an earlier box);
    "the correct option is X" only when there is neither. Two different boxed letters are no letter."""
    found = []  # (position, letter)
    group = final_box_group(answer)
    if group is not None and len(group[1]) == 1:
        inner = _TEXT_CMD_RE.sub(r"\1", group[1][0]).strip().strip("*$").strip()
        match = _GPQA_BOX_RE.match(inner)
        if match:
            found.append((group[0], match.group(1).upper()))
    strong, weak = _GPQA_TEXT_RES
    lines = list(strong.finditer(answer))
    if lines:
        found.append((lines[-1].start(1), lines[-1].group(1)))
    if not found:
        lines = list(weak.finditer(answer))
        if lines:
            found.append((lines[-1].start(1), lines[-1].group(1)))
    return max(found)[1] if found else None
