"""How often the automatic level grader agrees with the hand labels of tests/data/levels_smollm2.jsonl.

    python benchmarks/levels_agreement.py                # grade with SmolLM2 as `sfn grade-levels` does (minutes)
    python benchmarks/levels_agreement.py --from-cache   # replay the cached model scores: today's rules, no model
    python benchmarks/levels_agreement.py --write-docs   # docs/levels.md's agreement block from the results JSON
    python benchmarks/levels_agreement.py --check-docs   # exit 1 when that block differs (a test runs it)

The model run records every (context, units) -> nats-per-unit list the scorer computed, and every
text -> token ids encoding, in ``--cache`` (gzipped JSON). ``--from-cache`` runs the very same code path
(``grade_command.score_rows``' calibration, ``levels.grade_responses``) with a scorer that answers from that
record, so the text features and rules of the current tree are re-applied in a second, bit for bit as the
model would; a pair the record lacks (a rule change that scores new text) is an error naming the fix.
Results: agreement overall, per split, per hand label and per split and label, the confusion matrix, and
every disagreement with its evidence and reasons, with the command, threads and versions.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "levels_smollm2.jsonl"
RESULTS = REPO / "benchmarks" / "results" / "levels_agreement.json"
CACHE = REPO / "benchmarks" / "results" / "levels_scores_smollm2.json.gz"
DOC = REPO / "docs" / "levels.md"
LEVELS = ("I", "II", "III", "IV")
_BLOCK = re.compile(r"(<!-- sfn:levels-begin agreement -->\n)(.*?)(<!-- sfn:levels-end agreement -->)", re.S)


class RecordedScorer:
    """A scorer that answers from a record of another scorer's answers, or asks it and records (``live``)."""

    def __init__(self, live=None, record=None, save=None, every: int = 5):
        self.live, self.save, self.every, self.fresh = live, save, every, 0  # save(record) every ``every`` new scores
        rec = record or {"contexts": {}, "encodings": {}, "scores": {}}
        self.contexts, self.encodings, self.scores = rec["contexts"], rec["encodings"], rec["scores"]

    def _miss(self, what):
        raise SystemExit(f"levels_agreement: the cached scores lack {what}; the rules now score text the model "
                         f"run did not: rerun without --from-cache to refresh {CACHE.name}")

    def _lookup(self, store: dict, key: str, what: str, compute):
        """``store[key]``, asking the live scorer (``compute()``) and recording its answer when it is missing."""
        if key not in store:
            if self.live is None:
                self._miss(what)
            store[key] = list(compute())
        return store[key]

    def context(self, prompt):
        key = prompt or ""
        return tuple(self._lookup(self.contexts, key, f"the context of prompt {key[:40]!r}",
                                  lambda: self.live.context(prompt)))

    def encode(self, text):
        return list(self._lookup(self.encodings, text, f"the encoding of {text[:40]!r}", lambda: self.live.encode(text)))

    def nll(self, pairs):
        out = []
        for ctx, units in pairs:
            key = ",".join(map(str, ctx)) + "|" + ",".join(map(str, units))
            fresh = key not in self.scores
            out.append(list(self._lookup(self.scores, key, f"the score of a {len(units)}-unit text",
                                         lambda: self.live.nll([(ctx, units)])[0])))
            if fresh:
                self.fresh += 1
                if self.save and self.fresh % self.every == 0:
                    self.save(self.record())
        return out

    def record(self):
        return {"contexts": self.contexts, "encodings": self.encodings, "scores": self.scores}


def _prefill_calibration():
    from sfn_merge_plugin.sweep.levels import Calibration

    return Calibration(0.0, 1.0, 1.0, 0.0, 1.0, 0.0)  # any thresholds: --prefill keeps no level


def _write_record(path, rec):
    from sfn_merge_plugin.outputs import atomic_write

    atomic_write(str(path), gzip.compress(json.dumps(rec, separators=(",", ":"), sort_keys=True).encode(), mtime=0))


def rows_of(path=DATA) -> list:
    from sfn_merge_plugin.sweep.grade_command import read_rows

    return read_rows(str(path))


def data_digest(rows) -> str:
    return hashlib.sha256(json.dumps([[r["prompt"], r["response"], r.get("answer")] for r in rows]).encode()).hexdigest()[:16]


def grade(rows, scorer, seed=0):
    """(graded triples, Calibration): ``grade_command.score_rows`` with ``scorer`` in place of HFScorer."""
    from sfn_merge_plugin.sweep import levels
    from sfn_merge_plugin.sweep.grade_command import items_of

    cal = levels.calibrate(scorer, levels.CALIBRATION, seed)
    return levels.grade_responses(scorer, items_of(rows), cal, seed), cal


def agreement(rows, graded) -> dict:
    groups = collections.defaultdict(lambda: [0, 0])
    confusion = {a: {b: 0 for b in LEVELS} for a in LEVELS}
    misses = []
    for r, (level, reasons, ev) in zip(rows, graded):
        ok = level == r["label"]
        for key in ("all", "split:" + r["split"], "label:" + r["label"], f"{r['split']}:{r['label']}"):
            groups[key][0] += ok
            groups[key][1] += 1
        confusion[r["label"]][level] += 1
        if not ok:
            misses.append({"label": r["label"], "level": level, "split": r["split"], "cell": r.get("cell"),
                           "prompt": r["prompt"], "response": r["response"], "hand_reason": r.get("reason"),
                           "reasons": reasons, "evidence": ev.as_dict()})
    share = {k: {"agree": a, "rows": n, "share": round(a / n, 4)} for k, (a, n) in sorted(groups.items())}
    return {"agreement": share, "confusion": confusion, "disagreements": misses}


def environment(threads) -> dict:
    import platform

    import torch
    import transformers

    from sfn_merge_plugin import __version__

    return {"sfn": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "torch_threads": threads, "platform": platform.platform()}


def run(args) -> dict:
    rows = rows_of(args.data)
    t0 = time.time()
    if args.from_cache:
        with gzip.open(args.cache, "rt") as f:
            rec = json.load(f)
        if rec["data_digest"] != data_digest(rows):
            raise SystemExit(f"levels_agreement: {args.data} changed since {args.cache} was recorded; rerun without --from-cache")
        scorer = RecordedScorer(record=rec)
        source = dict(rec["recorded_with"], replayed_from=Path(args.cache).name)
    else:
        import torch

        from sfn_merge_plugin.smollm2 import smollm2_path
        from sfn_merge_plugin.sweep.generate import chat_enabled
        from sfn_merge_plugin.sweep.runner import load
        from sfn_merge_plugin.sweep.scoring import HFScorer

        torch.set_num_threads(args.threads)
        model, tok = load(str(smollm2_path()))
        source = {"scores": "SmolLM2-135M-Instruct (sfn_merge_plugin.smollm2), float32, scored by sweep.scoring.HFScorer",
                  "command": " ".join(["python", "benchmarks/levels_agreement.py", *sys.argv[1:]]),
                  **environment(args.threads)}
        old = None
        if args.reuse and Path(args.cache).is_file():  # scores of the same pairs by the same model and threads
            with gzip.open(args.cache, "rt") as f:
                old = json.load(f)
            if old["recorded_with"].get("torch_threads") != args.threads:
                raise SystemExit(f"levels_agreement: {args.cache} was recorded with another thread count; drop --reuse")

        def save(record):
            _write_record(args.cache, dict(record, data_digest=data_digest(rows), recorded_with=source, partial=True))

        scorer = RecordedScorer(live=HFScorer(model, tok, chat_enabled(tok, True)), record=old, save=save)
    if getattr(args, "prefill", False):  # only fill the record (a second process sharing the work), no results
        from sfn_merge_plugin.sweep import levels
        from sfn_merge_plugin.sweep.grade_command import items_of

        levels.grade_responses(scorer, items_of(rows), _prefill_calibration(), args.seed)
        _write_record(args.cache, dict(scorer.record(), data_digest=data_digest(rows), recorded_with=source, partial=True))
        raise SystemExit(0)
    graded, cal = grade(rows, scorer, args.seed)
    seconds = time.time() - t0
    if not args.from_cache:
        _write_record(args.cache, dict(scorer.record(), data_digest=data_digest(rows), recorded_with=source))
    res = {"data": _rel(args.data), "rows": len(rows), "seed": args.seed,
           "seconds": round(seconds, 1), "source": source, "calibration": cal.as_dict(), **agreement(rows, graded)}
    return res


def _rel(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def render_block(res) -> str:
    a = res["agreement"]
    src = res["source"]

    def cell(key):
        g = a.get(key)
        return "-" if g is None else f"{g['agree']}/{g['rows']} ({g['share']:.1%})"

    labels = [lv for lv in LEVELS if f"label:{lv}" in a]
    lines = ["| hand label | " + " | ".join(labels) + " | all |", "|---|" + "---|" * (len(labels) + 1)]
    for split in ("tuning", "held-out", "new"):
        if f"split:{split}" in a:
            lines.append(f"| {split} rows | " + " | ".join(cell(f"{split}:{lv}") for lv in labels) + f" | {cell('split:' + split)} |")
    lines.append("| **all rows** | " + " | ".join(cell(f"label:{lv}") for lv in labels) + f" | **{cell('all')}** |")
    conf = ["", "Confusion (rows: hand label, columns: grader):", "",
            "| | " + " | ".join(LEVELS) + " |", "|---|" + "---|" * len(LEVELS)]
    for lv in labels:
        conf.append(f"| {lv} | " + " | ".join(str(res["confusion"][lv][g]) for g in LEVELS) + " |")
    prov = (f"\nMeasured by `{src.get('command', 'python benchmarks/levels_agreement.py')}` ({src['scores']}; "
            f"{src.get('torch_threads')} torch threads, torch {src.get('torch')}, transformers {src.get('transformers')}, "
            f"SfN {src.get('sfn')}); rules of the current tree applied by `python benchmarks/levels_agreement.py "
            "--from-cache`; file: `benchmarks/results/levels_agreement.json`.\n")
    return "\n".join(lines + conf) + "\n" + prov


def docs_text(doc_text: str, res) -> str:
    if not _BLOCK.search(doc_text):
        raise SystemExit(f"levels_agreement: {DOC} has no <!-- sfn:levels-begin agreement --> block")
    return _BLOCK.sub(lambda m: m.group(1) + render_block(res) + m.group(3), doc_text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="hand-labelled JSONL (label, split) (default: %(default)s)")
    p.add_argument("--cache", default=str(CACHE), help="recorded model scores (default: %(default)s)")
    p.add_argument("--json", default=str(RESULTS), help="results file to write (default: %(default)s)")
    p.add_argument("--from-cache", action="store_true", help="replay the recorded scores instead of running the model")
    p.add_argument("--reuse", action="store_true",
                   help="start from the scores already in --cache (same model and threads), e.g. after an interrupted run")
    p.add_argument("--prefill", action="store_true",
                   help="only score the rows into --cache, no calibration or results (a second process sharing the work)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the model run (default 2)")
    p.add_argument("--seed", type=int, default=0, help="the shuffles' seed (default 0, as grade-levels)")
    p.add_argument("--write-docs", action="store_true", help="fill docs/levels.md's block from --json and exit")
    p.add_argument("--check-docs", action="store_true", help="exit 1 when docs/levels.md's block differs from --json")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    args = p.parse_args(argv)
    if args.write_docs or args.check_docs:
        res = json.loads(Path(args.json).read_text())
        old = DOC.read_text()
        new = docs_text(old, res)
        if args.check_docs:
            if new != old:
                print(f"{DOC} differs from {args.json}: run python benchmarks/levels_agreement.py --write-docs")
                return 1
            return 0
        DOC.write_text(new)
        return 0
    res = run(args)
    from sfn_merge_plugin.outputs import atomic_write_json

    atomic_write_json(args.json, res)
    a = res["agreement"]
    print("agreement " + ", ".join(f"{k} {v['agree']}/{v['rows']} ({v['share']:.1%})" for k, v in a.items()
                                   if k == "all" or k.startswith(("split:", "label:"))) + f" [{res['seconds']} s]")
    if not args.quiet:
        for m in res["disagreements"]:
            print(f"  {m['split']:8} hand {m['label']:3} grader {m['level']:3} {m['response'][:90]!r}  <- {m['reasons'][0][:100]}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
