"""What `sfn data s1k|convert|decontaminate` do once parsed: check everything, then stream and write.

Checks run cheapest first (settings, output path, input file, benchmarks), before any row is converted.
"""

from __future__ import annotations

import os
from pathlib import Path

from sfn_merge_plugin.errors import UserError


def _decontaminator(args, numbering: str):
    """The filter for --decontaminate / decontaminate: settings checked, benchmarks loaded, index built."""
    from sfn_merge_plugin.data.benchmarks import load_benchmarks
    from sfn_merge_plugin.data.decontaminate import DecontamConfig, Decontaminator

    config = DecontamConfig(args.ngram, args.threshold, getattr(args, "question_column", None)).check()
    return Decontaminator(load_benchmarks(args.against), config, numbering)


def _print_report(report, out_file) -> None:
    from sfn_merge_plugin.data.outfile import sidecar
    from sfn_merge_plugin.data.report import table

    print(table(report))
    print(f"report: {sidecar(out_file, 'decontam')}")


def run_s1k(args):
    from tqdm import tqdm

    from sfn_merge_plugin.data.decontaminate import DecontamConfig
    from sfn_merge_plugin.data.outfile import check_output_file
    from sfn_merge_plugin.data.write import write_dataset
    from sfn_merge_plugin.freeze.data import S1K_HUB_ID, DataError, check_columns, load_rows, to_example

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: give a positive number of rows")
    if args.decontaminate:
        DecontamConfig(args.ngram, args.threshold).check()
    out_file = check_output_file(os.path.join(args.output, "s1k.jsonl"), "provenance", args.force)
    source = args.source or S1K_HUB_ID
    columns = {"question": args.question_column, "trace": args.trace_column, "answer": args.answer_column}
    deco = None
    if args.decontaminate:
        deco = _decontaminator(argparse_namespace(args, question_column=None), "0-based row index in the source")
    try:
        rows = load_rows(source)
        if not rows:
            raise DataError(f"{source}: no rows")
        rows = rows[: args.limit] if args.limit else rows
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{source}: row {i} is a {type(row).__name__}, expected an object with columns")
            check_columns(row.keys(), columns, f"{source} (row {i})")
        examples = [to_example(row, i, columns) for i, row in enumerate(tqdm(rows, desc="s1K rows", unit="row"))]
    except DataError as exc:
        raise UserError(str(exc)) from None
    provenance = {
        "written_by": "sfn data s1k",
        "source": source,
        "columns": columns,
        "format": "TRL conversational prompt/completion; completion = s1 layout "
                  "'<|im_start|>think\\n{trace}\\n<|im_start|>answer\\nAnswer: {attempt}'",
    }
    triples = ((i, ex, rows[i][columns["question"]]) for i, ex in enumerate(examples))
    written, report = write_dataset(out_file, triples, provenance, deco)
    if report is not None:
        _print_report(report, out_file)
    print(f"wrote {written} rows to {out_file}")
    return 0


def run_convert(args):
    from sfn_merge_plugin.data.convert import Columns, examples
    from sfn_merge_plugin.data.decontaminate import DecontamConfig
    from sfn_merge_plugin.data.outfile import check_output_file
    from sfn_merge_plugin.data.rows import open_table, require_columns
    from sfn_merge_plugin.data.write import write_dataset

    if args.decontaminate:
        DecontamConfig(args.ngram, args.threshold).check()
    name = args.name or Path(args.source).stem
    if not name or os.sep in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain file name without folders or a leading dot")
    out_file = check_output_file(os.path.join(args.output, f"{name}.jsonl"), "provenance", args.force,
                                 inputs=[args.source])
    table = open_table(args.source)
    columns = Columns(args.question_column, args.answer_column, args.thinking_column)
    if table.columns is not None:
        require_columns(table, columns.roles().values())
    deco = _decontaminator(argparse_namespace(args, question_column=None), table.numbering) \
        if args.decontaminate else None
    provenance = {
        "written_by": "sfn data convert",
        "source": str(table.path),
        "columns": columns.roles(),
        "format": "TRL conversational prompt/completion; completion = s1 layout "
                  "'<|im_start|>think\\n{thinking}\\n<|im_start|>answer\\nAnswer: {answer}'",
    }
    written, report = write_dataset(out_file, examples(table, columns), provenance, deco, table.where)
    if report is not None:
        _print_report(report, out_file)
    print(f"wrote {written} rows to {out_file}")
    return 0


def run_decontaminate(args):
    from sfn_merge_plugin.data.decontaminate import DecontamConfig, decontaminate_file
    from sfn_merge_plugin.data.outfile import check_output_file, sidecar
    from sfn_merge_plugin.data.rows import open_table, require_columns
    from sfn_merge_plugin.outputs import atomic_write_json

    DecontamConfig(args.ngram, args.threshold, args.question_column).check()
    out_file = check_output_file(args.output, "decontam", args.force, inputs=[args.input])
    table = open_table(args.input)
    if table.columns is not None and args.question_column is not None:
        require_columns(table, [args.question_column])
    deco = _decontaminator(args, table.numbering)
    doc = decontaminate_file(table, out_file, deco)
    report = {"written_by": "sfn data decontaminate", "output": out_file.name, "input": str(table.path), **doc}
    atomic_write_json(sidecar(out_file, "decontam"), report)
    _print_report(report, out_file)
    print(f"wrote {report['rows_kept']} rows to {out_file}")
    return 0


def argparse_namespace(args, **changes):
    """A copy of ``args`` with some attributes replaced."""
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})
