"""How long the default ``sfn lab`` takes on this machine, first run (empty pair cache) and repeat run.

    python benchmarks/lab_budget.py --json benchmarks/results/lab_budget.json

Runs ``sfn lab -o OUT --cache-dir CACHE`` in a child process with a fresh empty cache (so the toy pairs are
trained, as on a new user's machine), then once more on the warm cache, and records the wall time of each
run, the lab's own per-stage timing (``results.json``), the seconds of each training stage, the child's
peak RSS and CPU seconds, and the load average before and after (a shared machine inflates every wall
time: compare ``cpu_s`` with ``wall_s`` x threads). Issue 11's budget: the first run within 10 minutes on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 600  # issue 11: the default lab, first run, on 2 CPU cores


def run_lab(out: Path, cache: Path, threads: int) -> dict:
    """One ``sfn lab`` run in a child process: wall, CPU and peak RSS of the child, the lab's own timing."""
    cmd = [sys.executable, "-m", "sfn_merge_plugin.cli", "lab", "-o", str(out), "--cache-dir", str(cache),
           "--threads", str(threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"sfn lab failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    training = {}
    for record in results["pairs"].values():
        for role in ("base", "reasoning"):
            t = record["pairs"]["training"][role]
            if not t["cached"]:
                training[t["stage"]] = {"seconds": t["seconds"], "steps": sum(t["rounds"])}
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mib": after.ru_maxrss / 1024, "timing_s": results["timing"], "training": training,
            "load_before": load_before, "load_after": os.getloadavg()}


def versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def git_head() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head + (" + working tree" if dirty else "")


def render(doc: dict) -> str:
    first, repeat = doc["first_run"], doc["repeat_run"]
    lines = [f"`sfn lab` (default size, {doc['threads']} threads, {doc['versions']['cpu_count']} CPUs), budget "
             f"{doc['budget_s'] / 60:.0f} min for the first run.", "",
             "| run | wall min | CPU min | peak RSS MiB | load before -> after |", "|---|---:|---:|---:|---|"]
    for name, r in (("first (empty cache)", first), ("repeat (pairs cached)", repeat)):
        if r is None:
            continue
        lines.append(f"| {name} | {r['wall_s'] / 60:.1f} | {r['cpu_s'] / 60:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
    lines += ["", "| first run, part | seconds |", "|---|---:|"]
    lines += [f"| train {stage} ({t['steps']} steps) | {t['seconds']:.0f} |" for stage, t in first["training"].items()]
    lines += [f"| {stage} | {s:.0f} |" for stage, s in first["timing_s"].items() if stage != "total"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the lab (default 2, the lab's own default)")
    p.add_argument("--json", type=Path, help="write the results here (default: print only)")
    p.add_argument("--render", type=Path, metavar="JSON", help="print the Markdown table of a results file and exit")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the first run's lab output here (default: deleted)")
    p.add_argument("--first-only", action="store_true", help="skip the repeat run on the warm cache")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    work = Path(tempfile.mkdtemp(prefix="sfn-lab-budget-"))
    try:
        print(f"first run (empty cache) under {work} ...", file=sys.stderr, flush=True)
        first = run_lab(work / "first", work / "cache", args.threads)
        print(f"  {first['wall_s'] / 60:.1f} min", file=sys.stderr, flush=True)
        repeat = None if args.first_only else run_lab(work / "repeat", work / "cache", args.threads)
        if args.keep:
            shutil.copytree(work / "first", args.keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {"command": "python benchmarks/lab_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "commit": git_head(), "threads": args.threads, "seed": 0, "budget_s": BUDGET_S, "versions": versions(),
           "first_run": first, "repeat_run": repeat,
           "within_budget": first["wall_s"] <= BUDGET_S}
    text = json.dumps(doc, indent=1) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.json)
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
