"""Output data files: a .jsonl file beside a JSON sidecar that says SfN wrote it, checked before any work.

A data file is SfN's when its sidecar (``x.provenance.json`` or ``x.decontam.json`` beside ``x.jsonl``) is
a JSON object whose ``written_by`` starts with ``sfn`` and whose ``output`` names it. An existing SfN file
is replaced only with ``--force``; a foreign one is refused the same way, with a message that says so.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from sfn_merge_plugin.errors import OutputError


def sidecar(path, kind: str) -> Path:
    """``data/x.jsonl`` -> ``data/x.<kind>.json`` (kind: "provenance" or "decontam")."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{kind}.json")


def written_by_sfn(path, kind: str) -> bool:
    try:
        doc = json.loads(sidecar(path, kind).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and str(doc.get("written_by", "")).startswith("sfn") \
        and doc.get("output") == Path(path).name


def check_output_file(path, kind: str, force: bool = False, inputs=()) -> Path:
    """Raise ``OutputError`` unless ``path`` may be (over)written; ``inputs`` are files it must not be."""
    from sfn_merge_plugin.outputs import check_output_folder

    path = Path(path).expanduser()
    if path.suffix != ".jsonl":
        raise OutputError(f"{path}: the output is a JSON-lines file; give a path ending in .jsonl")
    for source in inputs:
        if Path(source).expanduser().resolve() == path.resolve():
            raise OutputError(f"{path} is also the input; write the output to another path")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file path ending in .jsonl")
    if path.exists() and not force:
        if written_by_sfn(path, kind):
            raise OutputError(f"{path} exists; pass --force to overwrite it")
        raise OutputError(f"{path} exists and was not written by SfN (no {sidecar(path, kind).name} beside it); "
                          "choose another path, or pass --force to overwrite it anyway")
    check_output_folder(path.parent, force=True, what="output folder")  # not under a file, and writable
    return path


@contextlib.contextmanager
def output_parent(path):
    """Create the folder(s) of an output file; remove the ones created here if the block fails."""
    from sfn_merge_plugin.outputs import _explain

    parent = Path(path).parent
    created = []
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_explain(exc, path)) from None
    try:
        yield parent
    except BaseException:
        for folder in created:  # deepest first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
