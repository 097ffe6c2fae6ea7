"""The SmolLM2 pair's task: add two 3-digit numbers, worked column by column with carries.

SmolLM2-135M-Instruct knows most one-digit sums but cannot add 3-digit numbers in chat (``what is
482+359?`` -> a wrong number). The worked trace writes, from the units column up, that column's digit sum
(``+1`` for a carry) and the answer's digits found so far, so every step is a one-digit fact the model
knows plus a copy; a short SFT then teaches it to REASON (write the steps), not a new skill:

    <think>
    2+9=11 -> 1
    8+5+1=14 -> 41
    4+3+1=8 -> 841
    </think>
    \\boxed{841}
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sfn_merge_plugin.lab.tasks import THINK_CLOSE, THINK_OPEN, Task, distinct_draws, draws_outside

DIGITS = 3  # digits of each addend (100..999)


@dataclass(frozen=True)
class Sum:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"what is {self.a}+{self.b}?"

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def steps(self) -> tuple:
        """One line per column, units first: ``da+db[+1]=s -> digits so far`` (the last line writes its carry)."""
        a, b = str(self.a).zfill(DIGITS), str(self.b).zfill(DIGITS)
        lines, carry, found = [], 0, ""
        for i in range(DIGITS - 1, -1, -1):
            s = int(a[i]) + int(b[i]) + carry
            found = (str(s) if i == 0 else str(s % 10)) + found
            lines.append(f"{a[i]}+{b[i]}{'+1' if carry else ''}={s} -> {found}")
            carry = s // 10
        return tuple(lines)


def sample_sum(rng: random.Random) -> Sum:
    low, high = 10 ** (DIGITS - 1), 10 ** DIGITS
    return Sum(rng.randrange(low, high), rng.randrange(low, high))


def heldout_sums(n: int, seed: int = 0) -> list:
    """``n`` distinct evaluation problems; ``training_sums`` never draws these when given their questions."""
    return distinct_draws(sample_sum, n, random.Random(f"sfn-lab-addition-heldout-{seed}"))


def training_sums(n: int, rng: random.Random, exclude: set) -> list:
    return draws_outside(sample_sum, n, rng, exclude)


def think_completion(p: Sum) -> str:
    return f"{THINK_OPEN}\n" + "\n".join(p.steps) + f"\n{THINK_CLOSE}\n\\boxed{{{p.answer}}}"


def direct_completion(p: Sum) -> str:
    return f"\\boxed{{{p.answer}}}"


ADDITION = Task("addition", heldout_sums, training_sums, think_completion, direct_completion,
                f"{DIGITS}-digit addition, worked column by column with carries")
