"""The sweep's prompts: built-in conversation and reasoning prompts, and a user's JSONL file.

A JSONL line is ``{"prompt": "...", "id": "...", "answer": "...", "grader": "math"}``; only ``prompt`` is
required. A line with an ``answer`` is a reasoning prompt (Level IV when ``grading.grade`` accepts the
response); one without is a conversation prompt (Level III at best).
"""

from __future__ import annotations

from sfn_merge_plugin.data.rows import Wording, json_objects
from sfn_merge_plugin.errors import SfnError

from dataclasses import dataclass
from typing import Optional

GRADERS = ("math", "aime", "gpqa")  # the kinds sfn_merge_plugin.grading.grade accepts
_FIELDS = {"prompt", "id", "answer", "grader"}


class PromptError(SfnError):
    """A prompt file that cannot be used; the message names the file, line and fix."""


_WORDING = Wording(where="prompt file {path}, line {line}", unreadable="prompt file {path}: cannot read it ({reason})",
                   not_utf8="prompt file {path}: line {line} is not UTF-8 text; save the file as UTF-8",
                   bad_json="{where}: not valid JSON ({msg}); write one JSON object per line",
                   not_object='{where}: expected an object such as {{"prompt": "..."}}, got {got}',
                   error=PromptError)  # a prompt file's errors


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    answer: Optional[str] = None  # gold answer of a reasoning prompt
    grader: str = "math"

    @property
    def kind(self) -> str:
        return "reasoning" if self.answer is not None else "conversation"


_BOX = " Put the final answer in \\boxed{}."

# "books" is the conversation of the paper's Figure 4 / Table 3.
CONVERSATION = (
    Prompt("books", "Write a short paragraph about the importance of reading books."),
    Prompt("sky", "Explain in two sentences why the sky is blue."),
    Prompt("france", "What is the capital of France, and what is it famous for?"),
    Prompt("health", "Give me three simple tips for staying healthy."),
    Prompt("tea", "How do I make a good cup of tea?"),
    Prompt("email", "Write a polite email to a colleague asking to move our meeting to Friday."),
)
REASONING = (
    Prompt("add", "What is 17 + 25?" + _BOX, answer="42"),
    Prompt("sheep", "A farmer has 12 sheep, buys 7 more and then sells 5. How many sheep does he have now?" + _BOX, answer="14"),
    Prompt("percent", "What is 15% of 80?" + _BOX, answer="12"),
    Prompt("linear", "Solve for x: 3x + 4 = 19." + _BOX, answer="5"),
)
BUILTIN = CONVERSATION + REASONING


def load_jsonl(path: str) -> list:
    """Prompts from a JSONL file; every problem is reported with its line number."""
    out = []
    for no, row in json_objects(path, _WORDING):
        where = _WORDING.at(path, no)
        unknown = set(row) - _FIELDS
        if unknown:
            raise PromptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_FIELDS))}")
        text = row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"{where}: \"prompt\" must be a non-empty string")
        answer = row.get("answer")
        if answer is not None:
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
                raise PromptError(f"{where}: \"answer\" must be a non-empty string or number (the gold answer)")
            answer = str(answer).strip()
        grader = row.get("grader", "math")
        if grader not in GRADERS:
            raise PromptError(f"{where}: grader {grader!r} is not one of {', '.join(GRADERS)}")
        pid = row.get("id", f"line{no}")
        if not isinstance(pid, (str, int)) or not str(pid).strip():
            raise PromptError(f"{where}: \"id\" must be a non-empty string")
        out.append(Prompt(str(pid), text, answer, grader))
    if not out:
        raise PromptError(f"prompt file {path}: holds no prompt")
    return out


def prompt_set(file: Optional[str] = None, extend: bool = False, builtin=BUILTIN) -> list:
    """The built-in prompts, replaced by (``extend=False``) or followed by (``extend=True``) a JSONL file's."""
    prompts = list(builtin)
    if file is not None:
        prompts = prompts + load_jsonl(file) if extend else load_jsonl(file)
    return check_unique(prompts)


def check_unique(prompts: list) -> list:
    seen = set()
    for p in prompts:
        if not isinstance(p, Prompt):
            raise PromptError(f"prompts must be sweep.prompts.Prompt objects, got {type(p).__name__}")
        if p.id in seen:
            raise PromptError(f"prompt id {p.id!r} is used twice; give every prompt its own \"id\"")
        seen.add(p.id)
    if not prompts:
        raise PromptError("the prompt set is empty")
    return prompts
