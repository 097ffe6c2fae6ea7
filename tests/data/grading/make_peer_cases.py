"""Regenerate ``peer_cases.jsonl``: the answer-grading cases of two peers' own test suites, for SfN's grader.

Sources (read straight from the PyPI source distributions, nothing is executed from them):

- Math-Verify 0.9.0 (Apache-2.0, HuggingFace): every ``(gold, pred, expected)`` case of ``tests/*.py`` that
  goes through ``compare_strings`` / ``verify(parse(gold), parse(pred))``: the ``pytest.mark.parametrize``
  tables, plus the literal ``compare_strings(...)`` calls of plain test functions (``test_precision``).
  The per-case options (``precision`` -> ``float_rounding``, ``strict``, ``allow_set_relation_comp``) are read
  from the call; ``match_types`` is kept for information (SfN has no such switch).
- lm-eval 0.4.13 (MIT, EleutherAI): the ``is_equiv`` cases of ``tests/test_minerva_math.py`` (identity,
  difference, empty answers, indexed roots; normalisation-only asserts are not grading cases).

Each line: ``source`` (``file::test[index]``), ``gold`` and ``prediction`` exactly as in the peer's test,
``expected`` (bool), ``options`` (keyword arguments for ``grading.grade``), ``match_types`` (math-verify
only), and ``response``: what SfN grades. SfN only reads answers from a ``\\boxed{}`` or a "Final Answer:"
line (never "the last number"), so a prediction with neither is a BARE answer and is put in ``\\boxed{}``
(one enclosing ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` removed first); a prediction with a box or a
"Final Answer" is graded as written. ``peer_agrees`` records that the peer itself gives ``expected`` (run here).

Produced with (PyPI reachable)::

    cd /tmp && pip download --no-binary :all: --no-deps math-verify==0.9.0 lm-eval==0.4.13
    python tests/data/grading/make_peer_cases.py /tmp/math_verify-0.9.0.tar.gz /tmp/lm_eval-0.4.13.tar.gz

(math-verify 0.9.0 must be installed to fill ``peer_agrees``; lm-eval with its ``[math]`` extra for the
minerva cases, else their ``peer_agrees`` is null.)
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "peer_cases.jsonl"

# compare_strings' defaults in Math-Verify's tests/test_all.py; only differences are written as options
MV_DEFAULTS = {"precision": 6, "strict": True, "allow_set_relation_comp": False, "match_types": ["latex", "expr"]}
MV_TO_GRADE = {"precision": "float_rounding", "strict": "strict", "allow_set_relation_comp": "allow_set_relation_comp"}
# A response SfN can read as written: a box or a "Final Answer" line (grading.py's two answer forms)
_READABLE_RE = re.compile(r"\\(?:boxed|fbox)|final\s+answer", re.IGNORECASE)
_ONE_SPAN_RE = re.compile(r"^\s*(?:\$\$(?P<a>[^$]*)\$\$|\$(?P<b>[^$]*)\$|\\\((?P<c>.*)\\\)|\\\[(?P<d>.*)\\\])\s*$", re.DOTALL)


def sfn_response(prediction: str) -> str:
    """What SfN grades: the prediction as written if it has a box or a Final Answer line, else boxed."""
    if _READABLE_RE.search(prediction):
        return prediction
    span = _ONE_SPAN_RE.match(prediction)
    bare = next(g for g in span.groups() if g is not None) if span else prediction
    return "\\boxed{" + bare.strip() + "}"


class _Param:
    """Stands in for ``pytest.param(*values, id=...)`` while reading the tables."""

    def __init__(self, *values, id=None, marks=()):
        self.values, self.id = values, id


class _PytestShim:
    param = _Param


def _eval(node: ast.AST):
    return eval(compile(ast.Expression(node), "<peer>", "eval"), {"math": math, "pytest": _PytestShim})


def _parametrize(func: ast.FunctionDef, needs=()):
    """(argnames, rows) of a ``@pytest.mark.parametrize`` decorator, or None; the rows are only read when the
    argnames include ``needs`` (other tables may name objects this script does not import)."""
    for dec in func.decorator_list:
        if isinstance(dec, ast.Call) and ast.unparse(dec.func).endswith("mark.parametrize"):
            names = [n.strip() for n in _eval(dec.args[0]).split(",")]
            return names, (_eval(dec.args[1]) if set(needs) <= set(names) else [])
    return None


def _calls(func: ast.FunctionDef, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(func) if isinstance(n, ast.Call) and ast.unparse(n.func) == name]


def _row(values, names):
    if isinstance(values, _Param):
        return dict(zip(names, values.values)), values.id
    if len(names) == 1:
        return {names[0]: values}, None
    return dict(zip(names, values)), None


def math_verify_cases(sdist: Path) -> list[dict]:
    cases = []
    with tarfile.open(sdist) as tar:
        members = sorted(m for m in tar.getnames() if re.search(r"/tests/test_[^/]+\.py$", m))
        for member in members:
            tree = ast.parse(tar.extractfile(member).read().decode())
            fname = member.split("/tests/", 1)[1]
            for func in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")):
                table = _parametrize(func, needs=("gold", "pred"))
                compare = _calls(func, "compare_strings")
                verify_parse = [c for c in _calls(func, "verify") if "parse(" in ast.unparse(c)]
                if table and (compare or verify_parse):
                    names, rows = table
                    if not {"gold", "pred"} <= set(names):
                        continue
                    kw = {k.arg: k.value for k in compare[0].keywords} if compare else {}
                    for i, values in enumerate(rows):
                        row, _ = _row(values, names)
                        opts = {}
                        for key, node in kw.items():
                            opts[key] = row[node.id] if isinstance(node, ast.Name) and node.id in row else _eval(node)
                        expected = row.get("expected", row.get("result"))
                        cases.append(_mv_case(f"{fname}::{func.name}[{i}]", row["gold"], row["pred"], expected, opts))
                elif not table:  # literal compare_strings("gold", "pred", ...) calls in a plain test
                    for i, call in enumerate(compare):
                        parent_cmp = [n for n in ast.walk(func) if isinstance(n, ast.Compare) and n.left is call]
                        if not parent_cmp or len(call.args) < 2:
                            continue
                        opts = {k.arg: _eval(k.value) for k in call.keywords}
                        expected = _eval(parent_cmp[0].comparators[0])
                        cases.append(_mv_case(f"{fname}::{func.name}[{i}]", _eval(call.args[0]), _eval(call.args[1]), expected, opts))
    return cases


def _mv_case(source, gold, pred, expected, opts) -> dict:
    merged = {**MV_DEFAULTS, **opts}
    options = {MV_TO_GRADE[k]: merged[k] for k in MV_TO_GRADE if merged[k] != MV_DEFAULTS[k]}
    return {
        "suite": "math-verify", "source": source, "gold": gold, "prediction": pred, "expected": bool(expected),
        "options": options, "match_types": merged["match_types"], "response": sfn_response(pred),
        "peer_agrees": _math_verify_agrees(gold, pred, bool(expected), merged),
    }


def _math_verify_agrees(gold, pred, expected, opts) -> bool | None:
    """compare_strings of Math-Verify's tests/test_all.py, re-run here."""
    try:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    except ImportError:
        return None
    targets = [LatexExtractionConfig(boxed_match_priority=0) if m == "latex" else ExprExtractionConfig()
               for m in opts["match_types"]]
    got = verify(parse(gold, targets), parse(pred, targets), float_rounding=opts["precision"],
                 strict=opts["strict"], allow_set_relation_comp=opts["allow_set_relation_comp"])
    return bool(got) == expected


def minerva_cases(sdist: Path) -> list[dict]:
    """``is_equiv`` cases of lm-eval's tests/test_minerva_math.py (gold = second argument, as in the task)."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getnames() if m.endswith("tests/test_minerva_math.py"))
        tree = ast.parse(tar.extractfile(member).read().decode())
    cases = []
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")):
        calls = _calls(func, "is_equiv")
        if not calls:
            continue
        negated = any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not) for n in ast.walk(func))
        normalised = "normalize(" in ast.unparse(calls[0])
        table = _parametrize(func)
        rows = []
        if table:
            names, values = table
            for i, v in enumerate(values):
                row, pid = _row(v, names)
                pred, gold = (row["answer"], row["answer"]) if "answer" in row else (row.get("pred", row.get("x1")), row.get("gold", row.get("x2")))
                rows.append((f"{func.name}[{pid or i}]", pred, gold))
        else:
            args = calls[0].args
            if normalised:  # is_equiv(normalize("a"), normalize("b"))
                rows.append((func.name, _eval(args[0].args[0]), _eval(args[1].args[0])))
            else:
                rows.append((func.name, _eval(args[0]), _eval(args[1])))
        for source, pred, gold in rows:
            cases.append({
                "suite": "lm-eval-minerva", "source": f"test_minerva_math.py::{source}", "gold": gold,
                "prediction": pred, "expected": not negated, "options": {},
                "response": "\\boxed{" + pred + "}" if pred else "", "normalised_first": normalised,
                "peer_agrees": _minerva_agrees(pred, gold, not negated, normalised),
            })
    return cases


def _minerva_agrees(pred, gold, expected, normalised) -> bool | None:
    try:
        from lm_eval.tasks.minerva_math.utils import is_equiv, normalize_final_answer
    except (ImportError, AssertionError):  # lm-eval's [math] extra (antlr4 4.11) not installed: not re-run
        return None
    if normalised:
        pred, gold = normalize_final_answer(pred), normalize_final_answer(gold)
    return bool(is_equiv(pred, gold)) == expected


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("math_verify_sdist", type=Path, help="math_verify-0.9.0.tar.gz (pip download --no-binary :all:)")
    parser.add_argument("lm_eval_sdist", type=Path, help="lm_eval-0.4.13.tar.gz")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSONL to write (default {OUT.name} beside this script)")
    args = parser.parse_args(argv)
    cases = math_verify_cases(args.math_verify_sdist) + minerva_cases(args.lm_eval_sdist)
    args.out.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    for suite in ("math-verify", "lm-eval-minerva"):
        sub = [c for c in cases if c["suite"] == suite]
        agree, unrun = sum(c["peer_agrees"] is True for c in sub), sum(c["peer_agrees"] is None for c in sub)
        print(f"{suite}: {len(sub)} cases, the peer itself agrees on {agree}, not re-run on {unrun}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
