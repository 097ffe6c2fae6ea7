"""Read the YAML files SfN handles (mergekit recipes, TRL recipes) strictly, with one-line errors.

PyYAML keeps the last of two equal keys, so ``modules: o_proj`` followed by ``modules: mlp`` silently
merges the MLP. This loader rejects a duplicate key naming both lines, and turns a missing file, an
empty file, a tab, a syntax error or a top level that is not a mapping into one ``UsageError`` line
naming the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from sfn_merge_plugin.errors import UsageError


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # PyYAML reports unhashable keys itself
        if key in seen:
            raise _Duplicate(key, seen[key], key_node.start_mark.line + 1)
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Duplicate(Exception):
    def __init__(self, key, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def where_file(path) -> str:
    """``path`` as given, plus the folder a relative path was resolved against."""
    path = str(path)
    if os.path.isabs(os.path.expanduser(path)):
        return path
    return f"{path} (relative paths resolve against the current folder, {os.getcwd()})"


def read_text(path, what: str = "recipe") -> str:
    """The text of ``path``, or a ``UsageError`` naming it (missing, a folder, unreadable, not UTF-8)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise UsageError(f"{what} {where_file(path)}: no such file")
    if p.is_dir():
        raise UsageError(f"{what} {path} is a folder; give the YAML file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def loads(text: str, source: str = "recipe", mapping: bool = True):
    """Parse ``text`` strictly; ``source`` names it in errors. With ``mapping`` the top level must be one."""
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise UsageError(f"{source} is empty; write the recipe's keys in it (see recipes/ for examples)")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Duplicate as d:
        raise UsageError(
            f"{source} line {d.second}: key {d.key!r} appears twice (first at line {d.first}); YAML would "
            "silently keep only the last one. Keep one of them"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is not None and mark.line < len(text.splitlines()) and "\t" in text.splitlines()[mark.line]:
            raise UsageError(f"{source}{line}: holds a tab character; YAML indents with spaces only") from None
        raise UsageError(f"{source}{line}: not valid YAML ({problem})") from None
    if data is None:
        raise UsageError(f"{source} is empty; write the recipe's keys in it (see recipes/ for examples)")
    if mapping and not isinstance(data, dict):
        raise UsageError(f"{source}: the top level must be a mapping of keys (key: value), got a {type(data).__name__}")
    return data


def load(path, what: str = "recipe", mapping: bool = True):
    """Read and strictly parse the YAML file ``path``."""
    return loads(read_text(path, what), f"{what} {path}", mapping=mapping)


def duplicate_key_error(text: str, source: str):
    """The ``UsageError`` for the first duplicate key in ``text``, or None (other YAML errors: None too)."""
    try:
        yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except _Duplicate as d:
        return UsageError(
            f"{source} line {d.second}: key {d.key!r} appears twice (first at line {d.first}); YAML would "
            "silently keep only the last one. Keep one of them"
        )
    except yaml.YAMLError:
        return None
    return None
