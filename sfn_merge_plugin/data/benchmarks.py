"""The evaluation items to decontaminate against: SfN's own benchmarks, or any JSONL file.

SfN's benchmarks (``sfn_aime24``, ``sfn_math500``, ``sfn_gpqa_diamond``, also without ``sfn_``) come through
the loaders the lm-eval tasks use (``sfn_merge_plugin.evaluation.datasets``), so ``SFN_DATA_DIR`` and the
``SFN_<NAME>_PATH`` overrides apply here too, and an item's id is the one the task reports. Item texts stay
in memory: nothing here prints or returns them in a message (GPQA's terms forbid publishing examples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sfn_merge_plugin.data.rows import Wording, json_objects
from sfn_merge_plugin.errors import DataError

DEFAULT_AGAINST = ("sfn_aime24", "sfn_math500", "sfn_gpqa_diamond")  # what SfN's lm-eval tasks evaluate
TEXT_COLUMNS = ("problem", "question", "Problem", "Question", "prompt")  # for --against FILE.jsonl, first found
ID_COLUMNS = ("id", "unique_id", "ID", "Record ID")  # for --against FILE.jsonl; none: the line number
_AGAINST_WORDING = Wording(unreadable="--against {path}: cannot read it after line {line} ({reason})",
                           not_utf8="--against {path}: line {line} is not UTF-8 text; save the file as UTF-8",
                           bad_json="{where} is not valid JSON ({msg})")  # errors in an --against FILE.jsonl


@dataclass(frozen=True)
class Benchmark:
    name: str  # "aime24", "math500", "gpqa_diamond", or a JSONL file's stem
    source: str  # where the items came from: "hub <id>@<revision>" or a file path
    items: tuple[tuple[str, str], ...]  # (item id, question text); the text is never written out


def load_benchmarks(specs) -> list[Benchmark]:
    """``"sfn_aime24,sfn_math500"`` or a list of names / .jsonl paths -> loaded benchmarks (names unique)."""
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",")]
    specs = [s for s in specs if s]
    if not specs:
        raise DataError("--against is empty; give benchmark names (e.g. sfn_aime24,sfn_math500) or .jsonl files")
    out = [load_benchmark(s) for s in specs]
    names = [b.name for b in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"--against names {', '.join(twice)} more than once; give each benchmark once")
    return out


def load_benchmark(spec: str) -> Benchmark:
    from sfn_merge_plugin.evaluation import datasets

    if spec.endswith(".jsonl"):
        return _jsonl_benchmark(Path(spec).expanduser())
    if "/" in spec or "." in spec:
        raise DataError(f"--against {spec}: give a .jsonl file (one item per line) or one of SfN's benchmark names")
    name = spec.removeprefix("sfn_")
    if name not in datasets.SOURCES:
        known = ", ".join(f"sfn_{n}" for n in datasets.SOURCES)
        raise DataError(f"--against {spec}: unknown benchmark; known: {known}, or give a .jsonl file")
    kind, where = datasets.locate(name)
    source = str(where) if kind == "file" else f"hub {where.hub_path}@{where.revision or 'latest'}"
    try:
        docs = datasets.normalize(name, datasets.raw_rows(name))
    except DataError:
        raise
    except UnicodeDecodeError:  # a ValueError, but not a schema problem
        raise DataError(f"{source}: {name} is not UTF-8 text; save the file as UTF-8") from None
    except (KeyError, ValueError, TypeError) as exc:  # e.g. an AIME answer that is not a number
        raise DataError(f"{source}: {name} rows do not follow the hub schema ({type(exc).__name__}); "
                        f"the columns are {', '.join(datasets.SOURCES[name].required)}") from None
    items = tuple((d["id"], d.get("problem") or d.get("question") or "") for d in docs)
    return Benchmark(name, source, items)


def _jsonl_benchmark(path: Path) -> Benchmark:
    if not path.is_file():
        raise DataError(f"--against {path}: no such file (and not one of SfN's benchmark names)")
    items, text_column, id_column = [], None, None
    for number, row in json_objects(path, _AGAINST_WORDING):
        if text_column is None:
            text_column = next((c for c in TEXT_COLUMNS if c in row), None)
            id_column = next((c for c in ID_COLUMNS if c in row), None)
            if text_column is None:
                raise DataError(f"{path}: line {number}: no question column; name it one of "
                                f"{', '.join(TEXT_COLUMNS)} (it has: {', '.join(row)})")
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{path}: line {number}: column {text_column!r} is missing or not text")
        item_id = str(row[id_column]) if id_column and id_column in row else f"line {number}"
        items.append((item_id, text))
    if not items:
        raise DataError(f"{path}: no rows")
    return Benchmark(path.stem, str(path), tuple(items))

