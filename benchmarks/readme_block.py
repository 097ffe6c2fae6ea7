"""README.md's performance table, written from the committed benchmark results (never typed by hand).

    python benchmarks/readme_block.py            # print the block
    python benchmarks/readme_block.py --write    # fill README.md between the sfn:bench markers
    python benchmarks/readme_block.py --check    # exit 1 when README.md differs (the test suite runs it)

One row per target of issue 15 (and the sweep's speed and the lab's budget of issue 11): before, after, the reference it is
measured against, the target, and the results file with the command that produced it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
BEGIN, END = "<!-- sfn:bench-begin performance -->", "<!-- sfn:bench-end performance -->"


def _script(name: str):
    """A sibling benchmark script as a module: its own ratio functions, so this table and its --render agree."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _x(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def _pct(v) -> str:
    return "-" if v is None else f"{v:+.1%}"


def delta_rows(d) -> list:
    s = d["summary"]
    now = s["sfn delta --no-plots (every statistic)"]
    figs = s["sfn delta (every statistic + figures)"]
    before = next(v for k, v in s.items() if k.startswith("sfn delta --no-plots, before"))
    return [
        ("`sfn delta`, every statistic (`--no-plots`): speed-up over a norm-only loop (load_file x2)",
         _x(1 / before["median_ratio_to_norm"]), _x(1 / now["median_ratio_to_norm"]), ">= 1.5x"),
        ("`sfn delta` with its figures: speed-up over the same loop", "-", _x(1 / figs["median_ratio_to_norm"]), "-"),
        ("`sfn delta`: peak RSS", f"{before['peak_rss_mb']:.0f} MB", f"{now['peak_rss_mb']:.0f} MB", "< 1 GB"),
    ], d["command"]


def merge_rows(d) -> list:
    mb = _script("merge_bench")
    r = max(d["results"], key=lambda x: x["layers"])
    rows = r["rows"]
    label = f"{r['parameters'] / 1e9:.2f}B bf16, {r['layers']} layers"
    rss = lambda name: rows[name]["peak_rss_mib"] / rows[mb.NAIVE_ROW]["peak_rss_mib"]  # noqa: E731
    return [
        (f"`mergekit-yaml` + `sfn_swap` (every o_proj, {label}): SfN's part (wall minus `import mergekit.merge`), x `cp -r`",
         _x(mb.sfn_part(r, mb.BEFORE_ROW)), _x(mb.sfn_part(r, mb.SFN_ROW)), "<= 3x"),
        ("the merge step alone (`run_merge`, no start-up), x `cp -r`",
         _x(mb.sfn_part(r, mb.STEP_BEFORE_ROW)), _x(mb.sfn_part(r, mb.STEP_ROW)), "<= 3x"),
        ("`mergekit-yaml` peak RSS, x the paper's approach (transformers load x2 + save)",
         _x(rss(mb.BEFORE_ROW)), _x(rss(mb.SFN_ROW)), "<= 0.7x"),
    ], d["command"]


def pack_rows(d) -> list:
    r = max(d["depths"], key=lambda x: x["layers"])["results"]
    return [("`sfn pack apply` (exact o_proj pack), x `cp -r` of the base", "-",
             _x(r["sfn pack apply (exact, o_proj)"]["x_cp"]), "<= 2.5x")], d["command"]


def forcing_rows(d) -> list:
    fb = _script("forcing_bench")
    res = d["results"]
    old, new = "sfn-hf (forcing), KV cache not reused", "sfn-hf (forcing)"
    what = (f"budget forcing overhead over plain `generate` of the same tokens ({d['model']}, {d['n_prompts']} prompts, "
            f"micro-batch {d['batch_size']})")
    return [(what + ": wall", _pct(res[old]["overhead"]), _pct(res[new]["overhead"]), "<= +10%"),
            (what + ": decode forwards at plain's speed", _pct(fb.at_plain_decode_speed(d, old)),
             _pct(fb.at_plain_decode_speed(d, new)), "<= +10%")], d["command"]


def sweep_rows(d) -> list:
    c = d["settings"]
    what = (f"`sfn destroy-sweep` on SmolLM2-135M ({c['modules']} x {c['methods']} @ {c['layers']}, "
            f"{d['before']['prompts']} prompts x {c['max_new_tokens']} tokens, {c['threads']} threads): cells per minute")
    return [(what, f"{d['before']['cells_per_minute']:.2f}", f"{d['after']['cells_per_minute']:.2f}", "faster")], d["command"]


def lab_rows(d) -> list:
    first, repeat = d["first_run"], d["repeat_run"]
    train = sum(t["seconds"] for t in first["training"].values())
    what = f"default `sfn lab`, first run on an empty pair cache ({d['threads']} threads): minutes (training the pairs)"
    rows = [(what, "-", f"{first['wall_s'] / 60:.1f} ({train / 60:.1f})", f"<= {d['budget_s'] / 60:.0f}")]
    if repeat:
        rows.append(("default `sfn lab`, repeat run (pairs cached): minutes", "-", f"{repeat['wall_s'] / 60:.1f}", "-"))
    return rows, d["command"]


SOURCES = (("delta_bench.json", delta_rows), ("merge_bench.json", merge_rows), ("pack_bench_cpu.json", pack_rows),
           ("forcing_bench.json", forcing_rows), ("sweep_bench.json", sweep_rows), ("lab_budget.json", lab_rows))


def block() -> str:
    lines = ["| measured | before | after | target | results file |", "|---|---:|---:|---|---|"]
    commands = []
    for name, rows_of in SOURCES:
        d = _load(name)
        if d is None:
            continue
        rows, command = rows_of(d)
        for what, before, after, target in rows:
            lines.append(f"| {what} | {before} | {after} | {target} | `benchmarks/results/{name}` |")
        commands.append(f"`{command}`")
    return ("\n".join(lines) + "\n\nProduced by " + "; ".join(commands) + ". Each file records its threads, versions "
            "and machine; the 2-CPU machine was shared with other jobs, so only ratios from one run compare. "
            "Regenerate this table with `python benchmarks/readme_block.py --write`.\n")


def render(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md: no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block()}{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="fill README.md's block (default: print the block)")
    g.add_argument("--check", action="store_true", help="exit 1 when README.md's block differs from the results")
    a = p.parse_args(argv)
    if a.write:
        README.write_text(render(README.read_text()))
        return 0
    if a.check:
        ok = render(README.read_text()) == README.read_text()
        print("README.md matches benchmarks/results/" if ok else "README.md is out of date: run "
              "`python benchmarks/readme_block.py --write`")
        return 0 if ok else 1
    print(block(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
