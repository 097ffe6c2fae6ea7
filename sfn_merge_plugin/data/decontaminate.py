"""Remove the training rows that copy an evaluation item: one filter for a file, s1K and converted data.

The question of each training row (its user turn in TRL's prompt/completion layout, else a question or
problem column) is compared with every benchmark item through a ``BenchmarkIndex`` built once; a row is
removed when it matches an item of any benchmark, and the report keeps, per removed row, its number and the
id of the item it matched, never a text. ``decontaminate_file`` streams: the kept rows go to a temporary
file renamed onto the output only when every row was read.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass

from sfn_merge_plugin.data.index import DEFAULT_N, DEFAULT_THRESHOLD, BenchmarkIndex
from sfn_merge_plugin.errors import DataError

QUESTION_COLUMNS = ("prompt", "messages", "question", "problem", "Question", "Problem")  # auto: first found


@dataclass(frozen=True)
class DecontamConfig:
    n: int = DEFAULT_N  # word n-gram length; 8 as s1: long enough that stock phrases rarely match
    threshold: float | None = DEFAULT_THRESHOLD  # share of an item's n-grams a row must hold; None: any one
    column: str | None = None  # the training column holding the question; None: first of QUESTION_COLUMNS

    def check(self) -> "DecontamConfig":
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise DataError(f"--ngram {self.n}: give a whole number of words >= 1 (s1 used 8)")
        t = self.threshold
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and 0 < t <= 1):
            raise DataError(f"--threshold {t}: give a share of the item's n-grams in (0, 1], e.g. 0.5, "
                            "or leave it out to remove a row on any shared n-gram (s1's rule)")
        return self


def question_text(row: dict, column: str | None, where: str) -> str:
    """The text of a training row to compare with the benchmarks (the user turns of a conversation)."""
    if column is None:
        column = next((c for c in QUESTION_COLUMNS if c in row), None)
        if column is None:
            raise DataError(f"{where}: no question column ({', '.join(QUESTION_COLUMNS)}); it has: "
                            f"{', '.join(row) or '(none)'}. Name it with --question-column")
    elif column not in row:
        raise DataError(f"{where}: missing column {column}; it has: {', '.join(row) or '(none)'}")
    value = row[column]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        users = [m.get("content") for m in value if m.get("role") == "user"]
        if users and all(isinstance(u, str) for u in users):
            return "\n".join(users)
    raise DataError(f"{where}: column {column!r} is {type(value).__name__}; expected text or chat messages "
                    "with a user turn")


class Decontaminator:
    """Decide row by row; count what was removed, per benchmark and why."""

    def __init__(self, benchmarks, config: DecontamConfig, numbering: str = "line number in the input file"):
        self.config = config.check()
        self.numbering = numbering  # what a removed row's "row" counts, for the report
        self.benchmarks = benchmarks
        self.index = BenchmarkIndex(benchmarks, config.n, config.threshold)
        self.rows_in = 0
        self.removed: list[dict] = []  # {"row": number, "matches": [Match.as_dict()]}
        self.started = time.perf_counter()

    def keep(self, number: int, text: str) -> bool:
        """True when training row ``number`` (whose question is ``text``) matches no benchmark item."""
        self.rows_in += 1
        found = self.index.matches(text)
        if found:
            self.removed.append({"row": number, "matches": [m.as_dict() for m in found]})
        return not found

    def summary(self) -> dict:
        """The report body (see ``sfn_merge_plugin.data.report``): counts, settings, removed rows."""
        from sfn_merge_plugin.data.report import summary

        return summary(self)


def decontaminate_file(table, out_path, deco: Decontaminator, progress: bool = True) -> dict:
    """Stream ``table`` (a ``rows.Table``) through ``deco``; write the kept rows to ``out_path`` atomically.

    Kept .jsonl lines are copied as they are; rows of other files are written as JSON lines."""
    from sfn_merge_plugin.data.rows import iter_rows
    from sfn_merge_plugin.data.outfile import output_parent
    from sfn_merge_plugin.outputs import staged_file

    deco.numbering = table.numbering
    rows = iter_rows(table, desc="decontaminate", progress=progress, with_line=True)
    # closing: a row rejected here ends the progress bar now, not after the error line is printed
    with output_parent(out_path), staged_file(out_path) as tmp, open(tmp, "w", encoding="utf-8") as out, \
            contextlib.closing(rows):
        for number, row, line in rows:
            if deco.keep(number, question_text(row, deco.config.column, table.where(number))):
                out.write(line if line is not None else _json_line(row, table.where(number)))
    return deco.summary()


def _json_line(row: dict, where: str) -> str:
    try:
        text = json.dumps(row, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: cannot write the row as JSON ({exc}); convert that column first") from None
    return utf8_line(text, where)


def utf8_line(text: str, where: str) -> str:
    """``text`` + newline, checked to be writable as UTF-8 (a JSON ``\\ud800`` escape decodes to a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where}: holds {text[exc.start:exc.end]!r}, a lone UTF-16 surrogate that is not text; "
                        "fix or drop that row") from None
    return text + "\n"
