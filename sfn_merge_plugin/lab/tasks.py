"""The lab's task and probes: an 8-step chain mod 7 worked left to right, in three formats, plus chat.

Formats of one problem ``compute 1+3+4*4*2+4+4*5+6 mod 7, left to right.`` (answer 2):
  plain text, worked   question + separator + ``<think>\\n1 4 1 4 1 5 2 3 2\\n</think>\\n\\boxed{2}``
  chat, direct         chat-templated question, assistant ``\\boxed{2}`` (no reasoning)
  chat, reasoning      chat-templated question, assistant ``<think>...</think>\\boxed{2}``
Each trace step sits 2 tokens after the previous, the stride of the question's operator/digit pairs,
and the plain separator has as many tokens as the chat template's assistant header, so a trace reads
the question from the same relative offsets in plain text and in chat (what lets a skill learnt in
plain text be reused in chat). Chat probes are templated exchanges graded by exact match.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MOD = 7
STEPS = 8
OPS = "+*"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_PLAIN_CUE = "let me think:\n"  # the plain-text separator, left-padded with newlines to the chat header length


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple  # ((op, digit), ...)

    @property
    def expression(self) -> str:
        return str(self.start) + "".join(f"{op}{d}" for op, d in self.ops)

    @property
    def question(self) -> str:
        return f"compute {self.expression} mod {MOD}, left to right."

    @property
    def values(self) -> tuple:
        """The running values, start included: what a worked trace writes."""
        out, v = [self.start], self.start
        for op, d in self.ops:
            v = (v + d) % MOD if op == "+" else (v * d) % MOD
            out.append(v)
        return tuple(out)

    @property
    def answer(self) -> int:
        return self.values[-1]


def sample_problem(rng: random.Random, steps: int = STEPS) -> Problem:
    return Problem(rng.randrange(MOD), tuple((rng.choice(OPS), rng.randrange(1, MOD)) for _ in range(steps)))


def distinct_draws(sample, n: int, rng: random.Random) -> list:
    """``n`` problems from ``sample(rng)`` with distinct questions (a held-out set)."""
    out, seen = [], set()
    while len(out) < n:
        p = sample(rng)
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return out


def draws_outside(sample, n: int, rng: random.Random, exclude: set) -> list:
    """``n`` problems from ``sample(rng)``, none of whose questions is in ``exclude`` (the held-out set)."""
    out = []
    while len(out) < n:
        p = sample(rng)
        if p.question not in exclude:
            out.append(p)
    return out


def heldout_problems(n: int, seed: int = 0) -> list:
    """``n`` distinct evaluation problems; training streams never produce these (see ``training_problems``)."""
    return distinct_draws(sample_problem, n, random.Random(f"sfn-lab-heldout-{seed}"))


def training_problems(n: int, rng: random.Random, exclude: set) -> list:
    """``n`` problems drawn from ``rng``, none of whose questions is in ``exclude`` (the held-out set)."""
    return draws_outside(sample_problem, n, rng, exclude)


def think_completion(p: Problem) -> str:
    """The reasoning answer: the running values inside think delimiters, then the boxed answer."""
    return f"{THINK_OPEN}\n{' '.join(map(str, p.values))}\n{THINK_CLOSE}\n\\boxed{{{p.answer}}}"


def direct_completion(p: Problem) -> str:
    return f"\\boxed{{{p.answer}}}"


def chat_prompt(tokenizer, user_text: str) -> str:
    """The user turn plus the assistant header, through the tokenizer's own chat template."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True)


def plain_separator(tokenizer) -> str:
    """Text between question and trace in the plain format, exactly as many tokens as the chat header."""
    probe = "compute 1+1 mod 7, left to right."
    chat = chat_prompt(tokenizer, probe)
    header = len(tokenizer(chat[chat.index(probe) + len(probe):], add_special_tokens=False)["input_ids"])
    sep = _PLAIN_CUE
    for _ in range(header):
        n = len(tokenizer(sep, add_special_tokens=False)["input_ids"])
        if n == header:
            return sep
        if n > header:
            break
        sep = "\n" + sep
    raise ValueError(f"cannot build a {header}-token plain separator from {_PLAIN_CUE!r} with this tokenizer")


def plain_prompt(tokenizer, p: Problem) -> str:
    return p.question + plain_separator(tokenizer)


# --- chat: templated exchanges, some of which need the context (copying), graded by exact match ---------

_CAPITALS = [("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo"), ("egypt", "cairo"),
             ("peru", "lima"), ("kenya", "nairobi"), ("norway", "oslo"), ("chile", "santiago"), ("cuba", "havana")]
_COLORS = [("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("a lemon", "yellow"),
           ("a tomato", "red"), ("an orange", "orange"), ("a plum", "purple")]
_NAMES = ["anna", "ben", "carla", "dan", "emma", "felix", "gina", "hugo", "ida", "jack", "kim", "leo", "mia", "noah"]
_WORDS = ["red", "cat", "sun", "book", "tree", "fish", "moon", "bird", "road", "milk", "rain", "door", "star", "ship",
          "lamp", "king", "song", "wind", "fire", "gold"]


def _chat_templates():
    return [
        lambda r: (lambda c: (f"what is the capital of {c[0]}?", f"the capital of {c[0]} is {c[1]}."))(r.choice(_CAPITALS)),
        lambda r: (lambda c: (f"what color is {c[0]}?", f"{c[0]} is {c[1]}."))(r.choice(_COLORS)),
        lambda r: (lambda n: (f"hello, my name is {n}.", f"hello, {n}! how are you today?"))(r.choice(_NAMES)),
        lambda r: (lambda w: (f"repeat after me: {w}", w))(" ".join(r.sample(_WORDS, 3))),
        lambda r: (lambda n: (f"what number comes after {n}?", f"after {n} comes {n + 1}."))(r.randrange(99)),
    ]


def chat_exchange(rng: random.Random) -> tuple:
    """One (user, assistant) chat exchange from the templates."""
    templates = _chat_templates()
    return templates[rng.randrange(len(templates))](rng)


def chat_probes(n: int = 40, seed: int = 0) -> list:
    """``n`` (user, expected reply) probes, spread over every template: the cheap "did it break" check."""
    rng, templates, out = random.Random(f"sfn-lab-probes-{seed}"), _chat_templates(), []
    for i in range(n):
        out.append(templates[i % len(templates)](rng))
    return out


def chat_reply_ok(response: str, expected: str) -> bool:
    """Exact match after trimming whitespace: a probe either kept the conversation or it did not."""
    return response.strip() == expected.strip()


def grade_task(response: str, answer: int) -> bool:
    """The project's deterministic grader: the last ``\\boxed{}`` after ``</think>``, compared as an integer."""
    from sfn_merge_plugin.grading import grade

    return bool(grade(response, str(answer), "aime"))


# --- the task a pair is trained and graded on: one record, named in the pair's recipes -------------------

@dataclass(frozen=True)
class Task:
    """What a lab task is: how problems are drawn and held out, and how each is answered. A problem has a
    ``question`` (the user turn) and an integer ``answer`` (graded by ``grade_task``)."""

    name: str  # recorded in a pair's SFT recipe (so it enters the cache key) and in the results
    heldout: object  # (n, seed=0) -> n distinct held-out problems, the same for every caller
    training: object  # (n, rng, exclude) -> n problems from rng whose question is not in exclude
    think: object  # problem -> the reasoning completion: <think> worked steps </think> \\boxed{answer}
    direct: object  # problem -> the direct completion: \\boxed{answer}
    description: str  # one line for the report


CHAIN = Task("chain", heldout_problems, training_problems, think_completion, direct_completion,
             f"an {STEPS}-step chain of + and * mod {MOD}, worked left to right")


def task_named(name: str) -> Task:
    """The lab task called ``name``: ``chain`` (this module) or ``addition`` (``lab.addition``)."""
    if name == CHAIN.name:
        return CHAIN
    if name == "addition":
        from sfn_merge_plugin.lab.addition import ADDITION

        return ADDITION
    raise ValueError(f"unknown lab task {name!r}; choose one of {', '.join(TASK_NAMES)}")


TASK_NAMES = ("chain", "addition")
