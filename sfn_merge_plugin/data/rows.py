"""Stream the rows of a local .jsonl/.json/.parquet/.csv file, with a progress bar and one-line errors.

A row is a dict of column -> value, numbered as a user finds it: the line number in a .jsonl file, the
row number (1 = first data row) elsewhere. Nothing is loaded whole except a .json file (one JSON list).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sfn_merge_plugin.errors import DataError

KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
PROGRESS_EVERY = 1024  # rows between progress-bar updates (tqdm per row would cost more than the work)


@dataclass(frozen=True)
class Table:
    path: Path  # the file
    kind: str  # "jsonl", "json", "parquet" or "csv"
    columns: tuple[str, ...] | None  # known before reading rows (csv header, parquet schema); None for JSON

    @property
    def numbering(self) -> str:
        """What a row number counts in this file."""
        return "line number in the file" if self.kind == "jsonl" else "row number in the file (1 = first data row)"

    def where(self, number: int) -> str:
        """How a user finds row ``number``: "data.jsonl: line 7" or "data.csv: row 7"."""
        return f"{self.path}: {'line' if self.kind == 'jsonl' else 'row'} {number}"


def open_table(path) -> Table:
    """Check that ``path`` is a readable, non-empty file of a known kind, and read its column names."""
    p = Path(os.path.expanduser(str(path)))
    kind = KINDS.get(p.suffix.lower())
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if not p.is_file():
        raise DataError(f"{path}: not a file; give a .jsonl, .json, .parquet or .csv file")
    if kind is None:
        raise DataError(f"{path}: unknown file type {p.suffix or '(none)'}; give a .jsonl, .json, .parquet or .csv file")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    if not head:
        raise DataError(f"{path}: the file is empty; there are no rows to use")
    columns = None
    if kind == "csv":
        columns = _csv_header(p)
    elif kind == "parquet":
        columns = tuple(_parquet(p).schema_arrow.names)
    return Table(p, kind, columns)


def iter_rows(table: Table, desc: str = "rows", progress: bool = True, with_line: bool = False):
    """Yield (number, row dict) for every row; raise ``DataError`` at the first unreadable one, or if none.

    ``with_line``: yield (number, row, line) instead, line being the row's JSON text in a .jsonl file (so a
    filter can copy it byte for byte), else None."""
    from tqdm import tqdm

    bar = tqdm(total=_total(table), unit="B" if table.kind in ("jsonl", "csv") else "row", unit_scale=True,
               desc=desc, disable=not progress, file=sys.stderr)
    count = 0
    try:
        for count, (number, row, size) in enumerate(_READERS[table.kind](table), 1):
            line = None
            if isinstance(row, _Line):
                row, line = row.row, row.line
            if not isinstance(row, dict):
                raise DataError(f"{table.where(number)}: expected an object with columns, got {type(row).__name__}")
            if count % PROGRESS_EVERY == 0:
                bar.update(size - bar.n if table.kind in ("jsonl", "csv") else count - bar.n)
            yield (number, row, line) if with_line else (number, row)
        bar.update(bar.total - bar.n if bar.total else 0)
    finally:
        bar.close()
    if count == 0:
        raise DataError(f"{table.path}: no rows (the file holds no data row)")


def _total(table: Table) -> int:
    if table.kind == "parquet":
        return _parquet(table.path).metadata.num_rows
    if table.kind == "json":
        return 0
    return table.path.stat().st_size


@dataclass(frozen=True)
class Wording:
    """The error lines of the line readers below, as ``str.format`` templates, so each command keeps its words.

    A template may use path, line (its number), where (``where`` filled in), reason (why a read failed), msg
    (why a line is not JSON) and got (the type a line holds instead of an object); literal braces are doubled."""

    where: str = "{path}: line {line}"  # a line's place as a user finds it: "data.jsonl: line 7"
    unreadable: str = "{path}: cannot read it after line {line} ({reason})"  # opening or reading the file failed
    not_utf8: str = "{path}: line {line} is not UTF-8 text; save the file as UTF-8"  # a line that does not decode
    bad_json: str = "{where} is not valid JSON ({msg}); a .jsonl file holds one JSON object per line"  # json.loads failed
    not_object: str = "{where}: expected a JSON object, got {got}"  # json_objects: a line holding a list, number...
    error: type = DataError  # the SfnError subclass raised

    def at(self, path, line: int) -> str:
        """``where`` filled in for line ``line`` of ``path``."""
        return self.where.format(path=path, line=line)

    def fail(self, template: str, path, line: int, **fields) -> Exception:
        """The error to raise: ``template`` filled in for line ``line`` of ``path``."""
        return self.error(template.format(path=path, line=line, where=self.at(path, line), **fields))


WORDING = Wording()  # the readers' default words (``sfn data``'s)


def text_lines(path, label: str = "", wording: Wording = WORDING):
    """(line number, decoded line, bytes read so far) of a text file, with a clear error for bad UTF-8.

    ``label`` prefixes the file in errors (e.g. "--against ")."""
    done = number = 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                done += len(raw)
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise wording.fail(wording.not_utf8, f"{label}{path}", number) from None
                yield number, text, done
    except OSError as exc:
        raise wording.fail(wording.unreadable, f"{label}{path}", number, reason=exc.strerror or exc) from None


def json_lines(path, wording: Wording = WORDING):
    """(line number, JSON value, line, bytes read so far) for each non-blank line of a JSONL file; the first
    line that is not UTF-8 or not JSON raises ``wording.error``, naming the file, the line and the fix."""
    for number, line, done in text_lines(path, wording=wording):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise wording.fail(wording.bad_json, path, number, msg=exc.msg) from None
        yield number, value, line, done


def json_objects(path, wording: Wording = WORDING):
    """(line number, dict) for each non-blank line of a JSONL file: ``json_lines``, each value checked to be
    a JSON object. Blank lines are skipped; an empty file yields nothing (the caller says what it lacks)."""
    for number, value, _, _ in json_lines(path, wording):
        if not isinstance(value, dict):
            raise wording.fail(wording.not_object, path, number, got=type(value).__name__)
        yield number, value


def _jsonl(table: Table):
    for number, value, line, done in json_lines(table.path):
        yield number, _Line(value, line if line.endswith("\n") else line + "\n"), done


class _Line:
    """A .jsonl row with its text."""

    __slots__ = ("row", "line")

    def __init__(self, row, line: str):
        self.row, self.line = row, line


def _json(table: Table):
    try:
        with open(table.path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{table.path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, list):
        raise DataError(f"{table.path}: a .json file must hold a list of rows (for one row per line use .jsonl)")
    for number, row in enumerate(data, 1):
        yield number, row, number


def _csv_header(path: Path) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path}: the CSV file has no header row; its first line must name the columns")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataError(f"{path}: column(s) {', '.join(duplicates)} appear twice in the header; rename them")
    return tuple(header)


def _csv(table: Table):
    csv.field_size_limit(2**31 - 1)  # reasoning traces are longer than csv's default 128 KiB field limit
    state = {"done": 0}

    def lines():
        for _, line, done in text_lines(table.path):
            state["done"] = done
            yield line

    reader = csv.reader(lines())
    try:
        next(reader)
        for number, values in enumerate(reader, 1):
            if not values:
                continue
            if len(values) != len(table.columns):
                raise DataError(f"{table.where(number)} has {len(values)} fields, the header {len(table.columns)}; "
                                "quote fields that contain commas or newlines")
            yield number, dict(zip(table.columns, values)), state["done"]
    except csv.Error as exc:
        raise DataError(f"{table.path}: not a readable CSV file ({exc})") from None


def _parquet(path: Path):
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def _parquet_rows(table: Table):
    number = 0
    for batch in _parquet(table.path).iter_batches(batch_size=PROGRESS_EVERY):
        for row in batch.to_pylist():
            number += 1
            yield number, row, number


_READERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet_rows}


def require_columns(table: Table, wanted, row: dict | None = None, number: int | None = None, hint: str = "") -> None:
    """Raise ``DataError`` naming each missing column and listing the columns there are."""
    have = tuple(table.columns if row is None else row)
    missing = [c for c in wanted if c not in have]
    if missing:
        where = str(table.path) if row is None else table.where(number)
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; it has: {', '.join(have) or '(none)'}"
                        + (f". {hint}" if hint else ""))
