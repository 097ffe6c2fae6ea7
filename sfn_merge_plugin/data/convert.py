"""Any local table with a question, an answer and (optionally) a thinking column -> s1's TRL layout.

Each row goes through ``sfn_merge_plugin.freeze.data.to_example``, the row builder of ``sfn data s1k``, so a
converted dataset and s1K share one layout: the user turn is the question, the assistant turn
``<|im_start|>think\\n{thinking}\\n<|im_start|>answer\\nAnswer: {answer}`` (an empty think block when there
is no thinking column). A number in the answer column (AIME-style) is written as text.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfn_merge_plugin.errors import DataError


@dataclass(frozen=True)
class Columns:
    question: str  # the column holding the user turn
    answer: str  # the column holding the final answer
    thinking: str | None = None  # the reasoning trace: text or a list of texts; None: an empty think block

    def roles(self) -> dict:
        """role -> column, as ``to_example`` takes it (no "trace" when there is no thinking column)."""
        roles = {"question": self.question, "trace": self.thinking, "answer": self.answer}
        return {role: column for role, column in roles.items() if column is not None}


def examples(table, columns: Columns, progress: bool = True):
    """Yield (row number, prompt/completion example, question) for every row of ``table``, checked."""
    from sfn_merge_plugin.data.rows import iter_rows, require_columns
    from sfn_merge_plugin.freeze.data import to_example

    roles = columns.roles()
    if table.columns is not None:
        require_columns(table, roles.values())
    for number, row in iter_rows(table, desc="convert", progress=progress):
        if table.columns is None:
            require_columns(table, roles.values(), row, number)
        value = row[columns.answer]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise DataError(f"{table.where(number)}: column {columns.answer!r} is {value}; give a finite answer")
            row = {**row, columns.answer: str(value)}
        yield number, to_example(row, number, roles, where=table.where(number)), row[columns.question]
