"""Prepare s1K for the Freeze Stethoscope's TRL recipes (trl_configs/freeze_*.yaml).

Writes OUT/s1k.jsonl in TRL's conversational prompt/completion format with s1's layout (assistant turn:
"<|im_start|>think\\n" + trajectory + "\\n<|im_start|>answer\\nAnswer: " + attempt), so TRL trains on the
completion only, and OUT/s1k.provenance.json (source, columns, row count). Every row is checked first:
nothing is written if one is malformed.

examples:
  sfn data s1k -o data/                                  # simplescaling/s1K from the hub
  sfn data s1k -o data/ --source s1K/train.parquet       # a local copy (.parquet, .jsonl, .json or a folder)
  sfn data s1k -o data/ --source simplescaling/s1K-1.1 \\
      --trace-column deepseek_thinking_trajectory --answer-column deepseek_attempt
"""

from __future__ import annotations

import json
import os


def add_arguments(p):
    p.add_argument("dataset", choices=["s1k"], help="which dataset to prepare (s1k: the s1K reasoning traces)")
    p.add_argument("-o", "--output", required=True, help="output folder (gets s1k.jsonl and s1k.provenance.json)")
    p.add_argument("--source", default=None, help="hub id or local .parquet/.jsonl/.json file or folder "
                                                   "(default: simplescaling/s1K from the hub)")
    p.add_argument("--question-column", default="question")
    p.add_argument("--trace-column", default="thinking_trajectories",
                   help="the reasoning trace: a string or a list of strings joined by newlines")
    p.add_argument("--answer-column", default="attempt")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N rows (smoke tests)")
    p.add_argument("--force", action="store_true", help="overwrite an existing s1k.jsonl")


def run(args):
    from tqdm import tqdm

    from sfn_merge_plugin.errors import UserError
    from sfn_merge_plugin.freeze.data import (S1K_HUB_ID, DataError, check_columns, load_rows, to_example,
                                              write_jsonl, write_text)

    out_file = os.path.join(args.output, "s1k.jsonl")
    if os.path.exists(out_file) and not args.force:
        raise UserError(f"{out_file} exists; pass --force to overwrite it")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: give a positive number of rows")
    source = args.source or S1K_HUB_ID
    columns = {"question": args.question_column, "trace": args.trace_column, "answer": args.answer_column}
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
    write_jsonl(examples, out_file)
    provenance = {
        "source": source,
        "columns": columns,
        "rows": len(examples),
        "format": "TRL conversational prompt/completion; completion = s1 layout "
                  "'<|im_start|>think\\n{trace}\\n<|im_start|>answer\\nAnswer: {attempt}'",
    }
    write_text(os.path.join(args.output, "s1k.provenance.json"), json.dumps(provenance, indent=1) + "\n")
    print(f"wrote {len(examples)} rows to {out_file}")
    return 0
