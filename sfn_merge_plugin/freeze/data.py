"""s1K -> TRL's conversational prompt/completion format, with the thinking/answer layout s1 trained on.

s1 (simplescaling/s1, ``data/tokenization.py``) renders each row as a chat: the user turn is the question,
the assistant turn is ``<|im_start|>think\\n`` + the trajectory + ``\\n<|im_start|>answer\\n`` + ``Answer: ``
+ the attempt. As prompt/completion rows, TRL applies the model's chat template and computes the loss on
the completion only (``completion_only_loss``), which is what s1's collator did.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import DataError, SfnError  # noqa: F401

import json
import os
import tempfile

S1K_HUB_ID = "simplescaling/s1K"
COLUMNS = {"question": "question", "trace": "thinking_trajectories", "answer": "attempt"}




def s1_completion(trace, attempt: str) -> str:
    """The assistant turn exactly as s1 wrote it (a list of trajectories is joined by newlines)."""
    text = "\n".join(trace) if isinstance(trace, (list, tuple)) else str(trace)
    answer = attempt if "Answer:" in attempt else "Answer: " + attempt
    return "<|im_start|>think\n" + text.strip() + "\n<|im_start|>answer\n" + answer.strip()


def to_example(row: dict, index: int, columns: dict = COLUMNS, where: str | None = None) -> dict:
    """One s1K row -> {"prompt": [user turn], "completion": [assistant turn]}.

    ``columns`` maps the roles question/trace/answer to column names; without "trace" the think block is
    empty (``sfn data convert`` without --thinking-column). ``where`` names the row in errors."""
    where = where or f"row {index}"
    values = {"trace": ""}
    for role, column in columns.items():
        value = row.get(column)
        if isinstance(value, (list, tuple)) and role == "trace":
            if not all(isinstance(v, str) for v in value):
                raise DataError(f"{where}: column {column!r} must be a string or a list of strings")
            empty = not "".join(value).strip()
        elif isinstance(value, str):
            empty = not value.strip()
        elif value is None:
            empty = True
        else:
            raise DataError(f"{where}: column {column!r} is {type(value).__name__}, expected text")
        if empty:
            raise DataError(f"{where}: column {column!r} is empty")
        values[role] = value
    return {
        "prompt": [{"role": "user", "content": values["question"]}],
        "completion": [{"role": "assistant", "content": s1_completion(values["trace"], values["answer"])}],
    }


def check_columns(available, columns: dict = COLUMNS, source: str = "") -> None:
    missing = [c for c in columns.values() if c not in available]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; it has: {', '.join(sorted(available))}. "
            "For s1K-1.1 pass --trace-column deepseek_thinking_trajectory --answer-column deepseek_attempt"
        )


def load_rows(source: str) -> list:
    """Rows of a local .jsonl/.json/.parquet file or dataset folder, or of a hub dataset's train split."""
    if os.path.isfile(source):
        if source.endswith(".jsonl"):
            with open(source, encoding="utf-8") as f:
                return [_json_line(line, i, source) for i, line in enumerate(f) if line.strip()]
        if source.endswith(".json"):
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, list):
                raise DataError(f"{source}: a .json file must hold a list of rows")
            return data
        if source.endswith(".parquet"):
            return _load_with_datasets("parquet", data_files=source, split="train")
        raise DataError(f"{source}: unknown file type; give a .jsonl, .json or .parquet file, or a dataset folder")
    if os.path.isdir(source):
        return _load_with_datasets(source, split="train")
    if source.startswith(("/", ".", "~")) or source.endswith((".jsonl", ".json", ".parquet")) or source.count("/") != 1:
        raise DataError(f"{source}: no such file or folder (and not a hub id of the form 'org/name')")
    return _load_with_datasets(source, split="train", hub=True)


def _json_line(line: str, index: int, source: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: line {index + 1} is not valid JSON ({exc.msg})") from None


def _load_with_datasets(path, hub=False, **kwargs) -> list:
    from datasets import load_dataset

    try:
        return list(load_dataset(path, **kwargs))
    except Exception as exc:
        if hub:
            raise DataError(
                f"{path}: not a local file or folder, and loading it from the hub failed "
                f"({type(exc).__name__}: {exc}). "
                "Offline? Download the dataset's parquet file elsewhere and pass it with --source"
            ) from None
        raise DataError(f"{path}: cannot load it with datasets ({type(exc).__name__}: {exc})") from None


def write_jsonl(rows, path: str) -> None:
    """Write rows as JSON lines, atomically."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_text(path: str, text: str) -> None:
    """Write a file atomically: a temporary file in the same folder, renamed when complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".sfn-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
