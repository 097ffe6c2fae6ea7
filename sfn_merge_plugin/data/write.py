"""Write a prepared dataset: the rows (through the decontamination filter if asked) and their sidecars.

``OUT/x.jsonl`` gets the rows, ``OUT/x.provenance.json`` says what wrote them (and from what), and with a
filter ``OUT/x.decontam.json`` holds its report. Everything goes through temporary names, so a bad row met
halfway leaves the earlier output, or nothing, in place.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from sfn_merge_plugin.data.outfile import output_parent, sidecar, written_by_sfn


def write_dataset(out_file, examples, provenance: dict, deco=None, where=None) -> tuple[int, dict | None]:
    """``examples``: iterable of (row number, example dict, question text). Returns (rows written, report).

    ``where(number)`` says how a user finds a row in an error (default: "SOURCE: row N")."""
    from sfn_merge_plugin.data.decontaminate import utf8_line
    from sfn_merge_plugin.outputs import atomic_write_json, staged_file

    out_file = Path(out_file)
    written = 0
    examples = iter(examples)
    # closing: a row rejected here ends the reader's progress bar now, not after the error line is printed
    with output_parent(out_file), staged_file(out_file) as tmp, open(tmp, "w", encoding="utf-8") as f, \
            contextlib.closing(examples) if hasattr(examples, "close") else contextlib.nullcontext():
        for number, example, question in examples:
            if deco is not None and not deco.keep(number, question):
                continue
            place = where(number) if where else f"{provenance['source']}: row {number}"
            f.write(utf8_line(json.dumps(example, ensure_ascii=False), place))
            written += 1
    report = None
    if deco is not None:
        report = {"written_by": provenance["written_by"], "output": out_file.name, "input": provenance["source"],
                  **deco.summary()}
        atomic_write_json(sidecar(out_file, "decontam"), report)
    elif written_by_sfn(out_file, "decontam"):  # an older run's report would describe other rows
        sidecar(out_file, "decontam").unlink()
    summary = None if report is None else {k: report[k] for k in ("ngram", "threshold", "rows_in", "rows_removed")}
    atomic_write_json(sidecar(out_file, "provenance"),
                      {**provenance, "output": out_file.name, "rows": written, "decontamination": summary})
    return written, report
