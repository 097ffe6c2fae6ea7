"""The problems a map is graded on: the lab's tasks (offline: chain, addition), the eval benchmarks (SFN_DATA_DIR) with
their task prompts and graders, or a JSONL of {"prompt", "answer", "kind"}. Each problem is one user turn
(through the chat template when the tokenizer has one) and a gold answer for ``grading.grade``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from sfn_merge_plugin.data.rows import Wording, json_lines
from sfn_merge_plugin.errors import DataError
from sfn_merge_plugin.lab.tasks import TASK_NAMES as LAB_TASKS  # offline, generated, integer answers

BENCHMARKS = {"math500": "math", "aime24": "aime", "gpqa_diamond": "gpqa"}  # benchmark -> grading kind
TASKS = LAB_TASKS + tuple(BENCHMARKS)
_TASK_FILE = Wording(where="{path}:{line}", unreadable="task file {path}: {reason}", bad_json="{where}: not JSON ({msg})")


@dataclass(frozen=True)
class Problem:
    id: str  # stable id (benchmark id, chain index, JSONL line)
    prompt: str  # the user turn
    answer: str  # gold answer, as grading.grade reads it
    kind: str  # grading kind: math, aime or gpqa


def _task_prompt(benchmark: str) -> str:
    """The doc_to_text template of the benchmark's lm-eval task YAML (one source for the prompt wording)."""
    import re

    from sfn_merge_plugin.evaluation.lm_eval_hook import task_dir

    path = os.path.join(task_dir(), f"sfn_{benchmark}.yaml")
    match = re.search(r"^doc_to_text:\s*(\".*\")\s*$", open(path, encoding="utf-8").read(), re.MULTILINE)
    if not match:
        raise DataError(f"{path}: no one-line doc_to_text to build prompts from")
    return json.loads(match.group(1))


def benchmark_problems(name: str) -> list:
    import jinja2

    from sfn_merge_plugin.evaluation.datasets import normalize, raw_rows

    template = jinja2.Template(_task_prompt(name))
    docs = normalize(name, raw_rows(name))
    return [Problem(d["id"], template.render(**d), d["answer"], BENCHMARKS[name]) for d in docs]


def lab_problems(task: str, n: int, seed: int = 0) -> list:
    """A lab task's held-out problems (``lab.tasks.task_named``; integer answers, graded as AIME answers)."""
    from sfn_merge_plugin.lab import tasks as lab_tasks

    held = lab_tasks.task_named(task).heldout(n, seed)
    return [Problem(f"{task}-{i}", p.question, str(p.answer), "aime") for i, p in enumerate(held)]


def jsonl_problems(path: str) -> list:
    from sfn_merge_plugin.grading import KINDS

    out, seen = [], set()
    for i, row, _, _ in json_lines(path, _TASK_FILE):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip() or "answer" not in row:
            raise DataError(f'{path}:{i}: each line needs {{"prompt": "...", "answer": "...", "kind": "math|aime|gpqa"}}')
        kind = row.get("kind", "math")
        if kind not in KINDS:
            raise DataError(f"{path}:{i}: kind {kind!r}; choose one of {', '.join(KINDS)}")
        pid = str(row.get("id", f"line-{i}"))
        if pid in seen:
            raise DataError(f"{path}:{i}: id {pid!r} appears twice")
        seen.add(pid)
        out.append(Problem(pid, row["prompt"], str(row["answer"]), kind))
    if not out:
        raise DataError(f"task file {path} has no problems")
    return out


def load_problems(task: str, limit: int, seed: int = 0) -> list:
    """``limit`` problems of ``task`` (a name in TASKS or a .jsonl path), each gold answer checked by the grader."""
    from sfn_merge_plugin.grading import GradingError, grade

    if task in LAB_TASKS:
        problems = lab_problems(task, limit, seed)
    elif task in BENCHMARKS:
        problems = benchmark_problems(task)[:limit]
    elif task.endswith(".jsonl"):
        problems = jsonl_problems(task)[:limit]
    else:
        raise DataError(f"task {task!r}: choose {', '.join(TASKS)} or give a FILE.jsonl of {{prompt, answer, kind}}")
    for p in problems:
        try:
            grade("\\boxed{0}" if p.kind != "gpqa" else "Answer: A", p.answer, p.kind)
        except GradingError as exc:
            raise DataError(f"problem {p.id!r}: {exc}") from None
    return problems
