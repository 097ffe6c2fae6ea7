"""Prepare training data for the Freeze Stethoscope's TRL recipes (trl_configs/freeze_*.yaml).

  s1k            s1K -> OUT/s1k.jsonl in TRL's conversational prompt/completion format, s1's layout
  convert        any local .jsonl/.json/.parquet/.csv with named columns -> the same layout
  decontaminate  remove training rows that copy an AIME/MATH-500/GPQA item (or any JSONL's items)

The assistant turn is "<|im_start|>think\\n" + trace + "\\n<|im_start|>answer\\nAnswer: " + answer, so TRL
trains on the completion only. Every row is checked: nothing is written if one is malformed.

examples:
  sfn data s1k -o data/                                  # simplescaling/s1K from the hub
  sfn data s1k -o data/ --decontaminate                  # ... without rows that copy SfN's benchmarks
  sfn data convert my.parquet --question-column problem --answer-column answer --thinking-column solution -o data/
  sfn data decontaminate data/train.jsonl --against sfn_aime24,sfn_math500,sfn_gpqa_diamond -o data/clean.jsonl
Run `sfn data SUBCOMMAND --help` for each one's options.
"""

from __future__ import annotations

import argparse

S1K_DOC = """s1K -> OUT/s1k.jsonl in TRL's conversational prompt/completion format with s1's layout (assistant turn:
"<|im_start|>think\\n" + trajectory + "\\n<|im_start|>answer\\nAnswer: " + attempt), so TRL trains on the
completion only, and OUT/s1k.provenance.json (source, columns, row count). Every row is checked first:
nothing is written if one is malformed. With --decontaminate, rows that copy an evaluation item are left
out and OUT/s1k.decontam.json says which (see `sfn data decontaminate --help`).

examples:
  sfn data s1k -o data/                                  # simplescaling/s1K from the hub
  sfn data s1k -o data/ --source s1K/train.parquet       # a local copy (.parquet, .jsonl, .json or a folder)
  sfn data s1k -o data/ --source simplescaling/s1K-1.1 \\
      --trace-column deepseek_thinking_trajectory --answer-column deepseek_attempt
"""

CONVERT_DOC = """A local .jsonl/.json/.parquet/.csv file with a question, an answer and optionally a thinking column
-> OUT/NAME.jsonl in the layout `sfn data s1k` writes (same row builder): user turn = the question, assistant
turn = "<|im_start|>think\\n" + thinking + "\\n<|im_start|>answer\\nAnswer: " + answer (an empty think block
without --thinking-column), and OUT/NAME.provenance.json. Rows are streamed; the first bad row stops the
run with its line (.jsonl) or row number and nothing is written.

examples:
  sfn data convert my.jsonl --question-column q --answer-column a --thinking-column t -o data/
  sfn data convert my.csv --question-column problem --answer-column answer -o data/ --decontaminate
"""

DECONTAMINATE_DOC = """Remove the training rows whose question copies an evaluation item, and say which.

A row is removed when its normalised question equals an item's (reason "exact"), or when it holds word
n-grams of an item (reason "ngram"): with the default --threshold, any one shared --ngram 8-gram, the rule
s1 used to decontaminate s1K; with --threshold T, at least the share T of the item's distinct n-grams.
Normalisation folds case, Unicode forms and accents, spells Greek letters and math symbols as their LaTeX
names and drops LaTeX formatting, so "½ of π" and "$\\dfrac{1}{2}$ of $\\pi$" are the same words.
The question is the user turn of TRL's prompt/completion rows, else the first of the columns prompt,
messages, question, problem, Question, Problem (or --question-column).

Writes OUTPUT (the kept rows, JSON lines, in the input's order) and OUTPUT's .decontam.json report: per
benchmark the rows removed and why, per removed row its line number and the id of the item it matched.
No text of any item or row is printed or written to the report (GPQA's terms forbid publishing examples).
The benchmarks load as SfN's lm-eval tasks load them, so SFN_DATA_DIR and SFN_<NAME>_PATH work offline.

examples:
  sfn data decontaminate data/train.jsonl -o data/clean.jsonl       # against sfn_aime24,sfn_math500,sfn_gpqa_diamond
  SFN_DATA_DIR=/data/evals sfn data decontaminate train.parquet --against sfn_math500 -o clean.jsonl
  sfn data decontaminate train.jsonl --against my_test.jsonl --ngram 13 --threshold 0.5 -o clean.jsonl
"""


def _decontam_options(p, flag: bool) -> None:
    from sfn_merge_plugin.data.benchmarks import DEFAULT_AGAINST
    from sfn_merge_plugin.data.index import DEFAULT_N

    if flag:
        p.add_argument("--decontaminate", action="store_true",
                       help="leave out rows that copy an evaluation item (see `sfn data decontaminate --help`); "
                            "the report goes to OUT/NAME.decontam.json")
    p.add_argument("--against", default=",".join(DEFAULT_AGAINST),
                   help="comma-separated benchmarks (SfN's names, with or without sfn_) or .jsonl files whose "
                        "items have a problem/question column and an id/unique_id/ID/Record ID "
                        "(default: %(default)s)")
    p.add_argument("--ngram", type=int, default=DEFAULT_N,
                   help="n-gram length in words (default: %(default)s, as s1: long enough that stock phrases "
                        "rarely match, short enough that a reworded copy still shares one)")
    p.add_argument("--threshold", type=float, default=None,
                   help="share in (0, 1] of an item's distinct n-grams a row must contain to be removed "
                        "(default: any one shared n-gram, s1's rule; 0.5 keeps rows that share only a phrase)")


def add_arguments(p):
    sub = p.add_subparsers(dest="dataset", metavar="SUBCOMMAND", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    s = sub.add_parser("s1k", help="s1K -> TRL prompt/completion rows (s1's layout)", description=S1K_DOC,
                       formatter_class=raw)
    s.add_argument("-o", "--output", required=True, help="output folder (gets s1k.jsonl and s1k.provenance.json)")
    s.add_argument("--source", default=None, help="hub id or local .parquet/.jsonl/.json file or folder "
                                                  "(default: simplescaling/s1K from the hub)")
    s.add_argument("--question-column", default="question", help="the user turn (default: %(default)s)")
    s.add_argument("--trace-column", default="thinking_trajectories",
                   help="the reasoning trace: a string or a list of strings joined by newlines (default: %(default)s)")
    s.add_argument("--answer-column", default="attempt", help="the final answer (default: %(default)s)")
    s.add_argument("--limit", type=int, default=None,
                   help="keep only the first N rows, for smoke tests (default: all rows)")
    s.add_argument("--force", action="store_true", help="overwrite an existing s1k.jsonl")
    _decontam_options(s, flag=True)

    c = sub.add_parser("convert", help="a local .jsonl/.json/.parquet/.csv -> the same layout",
                       description=CONVERT_DOC, formatter_class=raw)
    c.add_argument("source", help="the .jsonl, .json, .parquet or .csv file")
    c.add_argument("-o", "--output", required=True, help="output folder (gets NAME.jsonl and NAME.provenance.json)")
    c.add_argument("--question-column", required=True, help="the column holding the question (the user turn)")
    c.add_argument("--answer-column", required=True, help="the column holding the final answer")
    c.add_argument("--thinking-column", default=None,
                   help="the reasoning trace: text or a list of texts (default: none, an empty think block)")
    c.add_argument("--name", default=None, help="output file name without .jsonl (default: the source's name)")
    c.add_argument("--force", action="store_true", help="overwrite an existing NAME.jsonl")
    _decontam_options(c, flag=True)

    d = sub.add_parser("decontaminate", help="remove rows that copy an evaluation item, with a report",
                       description=DECONTAMINATE_DOC, formatter_class=raw)
    d.add_argument("input", help="the training file: .jsonl, .json, .parquet or .csv")
    d.add_argument("-o", "--output", required=True, help="the kept rows, a .jsonl file (its report: X.decontam.json)")
    d.add_argument("--question-column", default=None,
                   help="the column compared with the benchmarks (default: the user turn of prompt/messages, "
                        "else question, problem, Question or Problem)")
    d.add_argument("--force", action="store_true", help="overwrite an existing output")
    _decontam_options(d, flag=False)


def run(args):
    from sfn_merge_plugin.freeze.data_runs import run_convert, run_decontaminate, run_s1k

    return {"s1k": run_s1k, "convert": run_convert, "decontaminate": run_decontaminate}[args.dataset](args)
