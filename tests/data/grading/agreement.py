"""Agreement of a grader with the peer cases of ``peer_cases.jsonl``, by cause (used by
``tests/test_grading_peers.py``; also a command, to compare two versions of the grader side by side).

    python tests/data/grading/agreement.py                                 # sfn_merge_plugin.grading
    python tests/data/grading/agreement.py --grader /tmp/old/grading.py    # another copy of grading.py
    python tests/data/grading/agreement.py --commit 75e885f                # grading.py of a commit (git show)
    python tests/data/grading/agreement.py --out benchmarks/results/grading_agreement.json

A case is graded with ``grade(case["response"], case["gold"], "math", **case["options"])`` (a grader without
those keyword arguments gets none). ``grade`` refuses an empty gold with ``GradingError``; that counts as "not
a match", which is what the one such case (minerva's ``is_equiv("", "")`` is False) asserts.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = HERE / "peer_cases.jsonl"

# Causes, first match wins: what about the case the grader has to get right
# a number spelled with commas (1000,99 / 7,425,000 / 14{,}916) or an unbraced root index (\sqrt[3]2)
_NUMBER_SPELLING_RE = re.compile(r"^[^\d(\[{]*\d[\d ]*,\s?\d+(?:,\d+)*(?:\.\d+)?[^\d,()\[\]]*$|\{\s*,\s*\}|\\sqrt\s*\[[^\]]*\]\s*[0-9A-Za-z]")
_FINAL_ANSWER_RE = re.compile(r"final\s+answer", re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
CAUSES = ("empty gold", "verify options", "several boxes", "Final Answer line", "number spelling",
          "bare answer with math delimiters", "other")


def load_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cause(case: dict) -> str:
    """The feature of a case its verdict depends on (for the per-cause table)."""
    response = case["response"].split("</think>")[-1]
    if not case["gold"]:
        return "empty gold"
    if case["options"]:
        return "verify options"
    if len(_BOX_RE.findall(response)) >= 2:
        return "several boxes"
    if _FINAL_ANSWER_RE.search(response):
        return "Final Answer line"
    if any(_NUMBER_SPELLING_RE.search(text) for text in (case["gold"], case["prediction"])):
        return "number spelling"
    if case["response"] != case["prediction"] and re.search(r"\$|\\\(|\\\[", case["response"]):
        return "bare answer with math delimiters"
    return "other"


def load_grader(path: str | None):
    """``grade`` and ``GradingError`` of sfn_merge_plugin.grading, or of the grading.py at ``path``."""
    if path is None:
        from sfn_merge_plugin import grading
    else:
        spec = importlib.util.spec_from_file_location("grading_under_test", path)
        grading = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(grading)
    return grading.grade, grading.GradingError


def verdicts(cases: list[dict], grade, error_type) -> list[bool]:
    """Does the grader agree with each case's expected label?"""
    takes_options = "float_rounding" in inspect.signature(grade).parameters
    agree = []
    for case in cases:
        try:
            got = grade(case["response"], case["gold"], "math", **(case["options"] if takes_options else {}))
        except error_type:
            if case["gold"]:
                raise
            got = False  # an empty gold is refused, never a match
        agree.append(got is case["expected"])
    return agree


def table(cases: list[dict], agree: list[bool]) -> dict:
    """{suite: {cases, agree, by_cause: {cause: [cases, disagree]}, disagree: [sources]}}."""
    out = {}
    for case, ok in zip(cases, agree):
        suite = out.setdefault(case["suite"], {"cases": 0, "agree": 0, "by_cause": {}, "disagree": []})
        suite["cases"] += 1
        suite["agree"] += ok
        row = suite["by_cause"].setdefault(cause(case), [0, 0])
        row[0] += 1
        if not ok:
            row[1] += 1
            suite["disagree"].append(case["source"])
    for suite in out.values():
        suite["by_cause"] = {c: suite["by_cause"][c] for c in CAUSES if c in suite["by_cause"]}
    return out


def format_table(result: dict) -> str:
    lines = []
    for name, suite in result.items():
        lines.append(f"{name}: agrees on {suite['agree']}/{suite['cases']} ({100 * suite['agree'] / suite['cases']:.1f}%)")
        for c, (n, bad) in suite["by_cause"].items():
            lines.append(f"  {c:34s} {n:4d} cases  {bad:3d} disagree")
        lines += [f"  disagrees: {s}" for s in suite["disagree"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grader", help="path of a grading.py to load instead of sfn_merge_plugin.grading")
    parser.add_argument("--commit", help="grade with sfn_merge_plugin/grading.py as of this git commit")
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    cases = load_cases()
    if args.commit:
        import subprocess
        import tempfile

        source = subprocess.run(["git", "show", f"{args.commit}:sfn_merge_plugin/grading.py"], check=True,
                                capture_output=True, text=True, cwd=HERE).stdout
        args.grader = str(Path(tempfile.mkdtemp()) / "grading.py")
        Path(args.grader).write_text(source, encoding="utf-8")
    grade, error_type = load_grader(args.grader)
    result = table(cases, verdicts(cases, grade, error_type))
    print(format_table(result))
    if args.out:
        import math_verify  # noqa: F401  (version recorded below)
        from importlib.metadata import version

        which = f" --commit {args.commit}" if args.commit else f" --grader {args.grader}" if args.grader else ""
        record = {"command": f"python tests/data/grading/agreement.py{which} --out {args.out}",
                  "math_verify": version("math-verify"), "cases_file": str(CASES.relative_to(HERE.parents[2])),
                  "result": result}
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
