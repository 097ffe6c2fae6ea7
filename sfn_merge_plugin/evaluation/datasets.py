"""Benchmark rows for the sfn_* tasks: hub datasets at pinned revisions, or local JSONL files for offline use.

Where a task's rows come from, first match wins:
  1. ``--metadata '{"aime24_path": "/data/aime24.jsonl"}'`` (also ``math500_path``, ``gpqa_diamond_path``)
  2. the task's environment variable: ``SFN_AIME24_PATH``, ``SFN_MATH500_PATH``, ``SFN_GPQA_DIAMOND_PATH``
  3. a data folder, ``--metadata '{"sfn_data_dir": ...}'`` or ``SFN_DATA_DIR``, holding ``aime24.jsonl``,
     ``math500.jsonl``, ``gpqa_diamond.jsonl``
  4. the hub, at the pinned revision (``<task>_revision`` in --metadata overrides it)
Local files use the hub's column names. GPQA is never bundled or logged: its options are shuffled per
question with a seed derived from its Record ID, so every run and every machine sees the same order.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import DataError, SfnError  # noqa: F401

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from sfn_merge_plugin.data.rows import Wording, json_objects




@dataclass(frozen=True)
class Source:
    name: str
    hub_path: str
    hub_config: str | None
    hub_split: str
    revision: str | None  # None: not pinned yet (see docs/evaluation.md)
    required: tuple[str, ...]
    note: str = ""


SOURCES = {
    "aime24": Source("aime24", "Maxwell-Jia/AIME_2024", None, "train", "8d88b2876a82a080e2f172cc9b25d0d9d2cb4792",
                     ("ID", "Problem", "Answer")),
    "math500": Source("math500", "HuggingFaceH4/MATH-500", None, "test", "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
                      ("problem", "answer", "unique_id")),
    "gpqa_diamond": Source("gpqa_diamond", "Idavidrein/gpqa", "gpqa_diamond", "train", None,
                           ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                            "Incorrect Answer 3", "Record ID"),
                           note="the dataset is gated: accept its terms on the hub and log in (HF_TOKEN)"),
}
LETTERS = "ABCD"


def env_var(name: str) -> str:
    return f"SFN_{name.upper()}_PATH"


def locate(name: str, metadata: dict | None = None) -> tuple[str, object]:
    """("file", Path) or ("hub", Source) for benchmark ``name``, following the order in the module docstring."""
    if name not in SOURCES:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(SOURCES)}")
    metadata = metadata or {}
    for origin, value in ((f"--metadata {name}_path", metadata.get(f"{name}_path")), (env_var(name), os.environ.get(env_var(name)))):
        if value:
            path = Path(str(value)).expanduser()
            if not path.is_file():
                raise DataError(f"{origin}={value}: no such file; point it at a {name} JSONL file in the hub schema")
            return "file", path
    for origin, value in (("--metadata sfn_data_dir", metadata.get("sfn_data_dir")), ("SFN_DATA_DIR", os.environ.get("SFN_DATA_DIR"))):
        if value:
            path = Path(str(value)).expanduser() / f"{name}.jsonl"
            if not path.is_file():
                raise DataError(f"{origin}={value} has no {name}.jsonl; add it (columns: {', '.join(SOURCES[name].required)}) "
                                f"or set {env_var(name)} to its path")
            return "file", path
    return "hub", SOURCES[name]


def read_jsonl(path: Path, source: Source) -> list[dict]:
    """Rows of a local JSONL file, checked for the hub columns the task needs (contents never echoed)."""
    wording = Wording(where="{path}:{line}", bad_json="{where}: not valid JSON ({msg}); one JSON object per line is expected",
                      not_utf8="{path}: " + source.name + " is not UTF-8 text; save the file as UTF-8")
    rows = []
    for number, row in json_objects(path, wording):
        missing = [c for c in source.required if c not in row]
        if missing:
            raise DataError(f"{path}:{number}: missing column(s) {', '.join(missing)}; {source.name} rows need "
                            f"{', '.join(source.required)} (the hub schema of {source.hub_path})")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_hub(source: Source, revision: str | None = None) -> list[dict]:
    """Rows from the hub at the pinned revision (an offline machine gets a message on how to go local)."""
    import datasets

    revision = revision or source.revision
    try:
        data = datasets.load_dataset(source.hub_path, source.hub_config, split=source.hub_split, revision=revision)
    except Exception as exc:
        extra = f"; {source.note}" if source.note else ""
        raise DataError(
            f"could not load {source.hub_path} ({source.hub_config or 'default'}, revision {revision or 'latest'}) from "
            f"the hub: {type(exc).__name__}{extra}. Offline? Put {source.name}.jsonl (hub columns) in a folder and set "
            f"SFN_DATA_DIR, or set {env_var(source.name)}"
        ) from None
    rows = [dict(r) for r in data]
    missing = [c for c in source.required if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{source.hub_path} at revision {revision} lacks column(s) {', '.join(missing)}")
    return rows


def raw_rows(name: str, metadata: dict | None = None) -> list[dict]:
    kind, where = locate(name, metadata)
    if kind == "file":
        return read_jsonl(where, SOURCES[name])
    return load_hub(where, (metadata or {}).get(f"{name}_revision"))


def shuffle_seed(record_id: str) -> int:
    """A stable seed from a question's id (sha256, first 8 bytes): independent of Python's hash salt."""
    return int.from_bytes(hashlib.sha256(str(record_id).encode("utf-8")).digest()[:8], "big")


def shuffled_options(record_id: str, correct: str, incorrect: list[str]) -> tuple[list[str], str]:
    """The four options in the order seeded by ``record_id``, and the letter of the correct one."""
    options = [correct] + list(incorrect)
    order = list(range(len(options)))
    random.Random(shuffle_seed(record_id)).shuffle(order)
    choices = [options[i] for i in order]
    return choices, LETTERS[order.index(0)]


def normalize(name: str, rows: list[dict], origin: str | None = None) -> list[dict]:
    """Hub rows -> the fields the task templates use: id, problem/question(+A-D), answer.
    ``origin`` (the file or hub id the rows came from) names the row in an error."""
    out = []
    if name == "aime24":
        for number, row in enumerate(rows, 1):
            try:
                value = row["Answer"]
                answer = str(value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip()))
            except (TypeError, ValueError):
                raise DataError(f"{origin or name}: row {number} (ID {row.get('ID')!r}): Answer {row['Answer']!r} is not an "
                                "integer; AIME answers are integers 0-999") from None
            out.append({"id": str(row["ID"]), "problem": str(row["Problem"]).strip(), "answer": answer})
    elif name == "math500":
        for row in rows:
            out.append({"id": str(row["unique_id"]), "problem": str(row["problem"]).strip(), "answer": str(row["answer"]).strip(),
                        "subject": str(row.get("subject", "")), "level": str(row.get("level", ""))})
    elif name == "gpqa_diamond":
        for row in rows:
            incorrect = [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)]
            choices, letter = shuffled_options(str(row["Record ID"]), str(row["Correct Answer"]).strip(), incorrect)
            doc = {"id": str(row["Record ID"]), "question": str(row["Question"]).strip(), "choices": choices, "answer": letter}
            doc.update(zip(LETTERS, choices))
            out.append(doc)
    else:
        raise DataError(f"unknown benchmark {name!r}")
    return out


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def load(name: str, **metadata):
    """A ``datasets.DatasetDict`` with one ``test`` split, as lm-eval's ``custom_dataset`` expects."""
    import datasets

    kind, where = locate(name, metadata)
    docs = normalize(name, raw_rows(name, metadata), origin=str(where) if kind == "file" else getattr(where, "hub_path", name))
    lenient = _truthy(metadata.get("paper_lenient", os.environ.get("SFN_PAPER_LENIENT", "")))
    for doc in docs:
        doc["sfn_paper_lenient"] = lenient
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def load_aime24(**metadata):
    return load("aime24", **metadata)


def load_math500(**metadata):
    return load("math500", **metadata)


def load_gpqa_diamond(**metadata):
    return load("gpqa_diamond", **metadata)
