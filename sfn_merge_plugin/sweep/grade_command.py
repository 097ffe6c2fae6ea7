"""Grade responses into the paper's Levels I-IV without regenerating them: the sweep's classifier, on a file.

  sfn grade-levels MODEL responses.jsonl -o graded.jsonl

Each input line is {"prompt": ..., "response": ...[, "answer": ..., "grader": "math"]}; other keys are kept.
MODEL is the UNDAMAGED model the responses are scored with (the sweep scores with the undamaged model too):
the thresholds are calibrated on it exactly as ``sfn destroy-sweep`` does. Each output line is the input line
plus "level", "level_reasons" and "level_evidence"; the file is written atomically. The classifier and its
evidence are described in docs/levels.md.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from sfn_merge_plugin.data.rows import Wording, json_objects
from sfn_merge_plugin.errors import DataError

ADDED = ("level", "level_reasons", "level_evidence")  # the keys this command writes
GRADERS = ("math", "aime", "gpqa")
_WORDING = Wording(where="{path}, line {line}",
                   unreadable='{path}: cannot read it ({reason}); give a JSONL file of {{"prompt", "response"}} lines',
                   not_utf8='{path}: not UTF-8 text; give a JSONL file of {{"prompt", "response"}} lines',
                   bad_json="{where}: not valid JSON ({msg}); write one JSON object per line",
                   not_object='{where}: expected an object {{"prompt": ..., "response": ...}}, got {got}')  # input errors


def read_rows(path: str) -> list:
    """The JSONL lines of ``path``, each checked; any problem is one DataError naming the line and the fix."""
    rows = []
    for no, row in json_objects(path, _WORDING):
        where = _WORDING.at(path, no)
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError(f"{where}: \"prompt\" must be a non-empty string (the text the response answers)")
        if not isinstance(row.get("response"), str):
            raise DataError(f"{where}: \"response\" must be a string (\"\" for an empty response)")
        answer = row.get("answer")
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip()):
            raise DataError(f"{where}: \"answer\" must be a non-empty string or number (the gold answer), or left out")
        if row.get("grader", "math") not in GRADERS:
            raise DataError(f"{where}: \"grader\" {row['grader']!r} is not one of {', '.join(GRADERS)}")
        taken = [k for k in ADDED if k in row]
        if taken:
            raise DataError(f"{where}: already has {', '.join(map(repr, taken))}, which this command writes; "
                            "rename that key (e.g. a hand label to \"label\")")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: holds no line to grade")
    return rows


def items_of(rows: list) -> list:
    return [(r["prompt"], r["response"], None if r.get("answer") is None else str(r["answer"]).strip(),
             r.get("grader", "math")) for r in rows]


def score_rows(model, tokenizer, rows: list, chat: Optional[bool] = None, seed: int = 0):
    """([(level, reasons, Evidence)] per row, the Calibration) for a loaded undamaged model: what
    ``grade_rows`` writes, with the evidence at full precision (benchmarks/levels_agreement.py caches it)."""
    from sfn_merge_plugin.sweep import levels
    from sfn_merge_plugin.sweep.generate import chat_enabled
    from sfn_merge_plugin.sweep.scoring import HFScorer

    scorer = HFScorer(model, tokenizer, chat_enabled(tokenizer, chat))
    cal = levels.calibrate(scorer, levels.CALIBRATION, seed)
    return levels.grade_responses(scorer, items_of(rows), cal, seed), cal


def grade_rows(model, tokenizer, rows: list, chat: Optional[bool] = None, seed: int = 0):
    """(rows with level, level_reasons and level_evidence added, the Calibration) for a loaded undamaged model."""
    graded, cal = score_rows(model, tokenizer, rows, chat, seed)
    out = [dict(r, level=lv, level_reasons=why, level_evidence=ev.as_dict()) for r, (lv, why, ev) in zip(rows, graded)]
    return out, cal


def grade_file(model_path: str, path: str, out: str, chat: Optional[bool] = None, dtype: str = "auto",
               device: Optional[str] = None, seed: int = 0) -> dict:
    """Grade every line of ``path`` with the undamaged model at ``model_path`` and write ``out`` atomically.
    Returns {"counts": {level: n}, "calibration": {...}}. Inputs are checked before the model loads."""
    from sfn_merge_plugin.checkpoint import open_checkpoint
    from sfn_merge_plugin.errors import OutputError
    from sfn_merge_plugin.outputs import atomic_write
    from sfn_merge_plugin.sweep.runner import load

    rows = read_rows(path)
    if os.path.isdir(out):
        raise OutputError(f"output {out} is a folder; give a file path such as graded.jsonl")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise OutputError(f"output {out}: its folder {parent} does not exist; create it or choose another path")
    ckpt = open_checkpoint(str(model_path))
    model, tokenizer = load(ckpt.path, dtype, device)
    graded, cal = grade_rows(model, tokenizer, rows, chat, seed)
    atomic_write(out, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in graded))
    counts = {lv: sum(r["level"] == lv for r in graded) for lv in ("I", "II", "III", "IV")}
    return {"counts": counts, "calibration": cal.as_dict()}


def add_arguments(p):
    p.add_argument("model", help="the UNDAMAGED model that scores the responses (local folder; calibrated as the sweep does)")
    p.add_argument("file", help='JSONL lines {"prompt": ..., "response": ...[, "answer": ..., "grader": "math|aime|gpqa"]}')
    p.add_argument("-o", "--output", required=True,
                   help="JSONL to write: each input line plus level, level_reasons, level_evidence")
    p.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                   help="score after the prompt wrapped in the tokenizer's chat template (auto: when it has one; "
                        "use what generated the responses)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles the evidence uses (default 0, the sweep's)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="load dtype (auto: as stored)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def run(args):
    res = grade_file(args.model, args.file, args.output, chat={"auto": None, "on": True, "off": False}[args.chat_template],
                     dtype=args.dtype, device=args.device, seed=args.seed)
    cal = res["calibration"]
    for problem in cal["problems"]:
        print(f"warning: calibration: {problem}")
    counts = ", ".join(f"{lv} {n}" for lv, n in res["counts"].items())
    print(f"graded {sum(res['counts'].values())} responses ({counts}); thresholds max_nll {cal['max_nll']}, "
          f"min_order {cal['min_order']}, min_relevance {cal['min_relevance']}")
    print(f"written: {args.output}")
    return 0
