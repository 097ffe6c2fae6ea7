"""`sfn destroy-sweep` speed on SmolLM2-135M-Instruct: cells per minute BEFORE (a git commit) and AFTER (this tree).

    git worktree add /tmp/sfn_before 0695ad1
    python benchmarks/sweep_bench.py --before-tree /tmp/sfn_before --json benchmarks/results/sweep_bench.json
    python benchmarks/sweep_bench.py --render benchmarks/results/sweep_bench.json      # the Markdown table

Each side runs the same sweep (``run_sweep`` on the SmolLM2 folder, the built-in prompts, greedy, report
written) in its own process, one after the other in one invocation: BEFORE with ``PYTHONPATH`` set to the
worktree (its ``sfn_merge_plugin.__file__`` is recorded to prove which code ran), AFTER with this tree.
Wall time is split by phase with wrappers on the sweep's own functions (load, generate, fingerprints,
calibrate, score = ``levels.measure`` outside calibration, other = the rest: grading, report); every call
of the model's forward is counted per phase. Peak RSS is the worker's ru_maxrss. The machine is shared:
compare the ratio measured side by side, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("load", "generate", "fingerprints", "calibrate", "score", "other")


# ------------------------------------------------------------------------------------------------ worker


def worker(args) -> dict:
    """One sweep in this process with per-phase timers; returns the measurements (printed as JSON)."""
    import resource

    import torch

    import sfn_merge_plugin
    from sfn_merge_plugin.sweep import generate as gen_mod
    from sfn_merge_plugin.sweep import levels, runner
    from sfn_merge_plugin.sweep.generate import Decoding

    torch.set_num_threads(args.threads)
    seconds = dict.fromkeys(PHASES, 0.0)
    forwards = dict.fromkeys(PHASES, 0)
    stack: list = []  # the phases being timed, outermost first: nested time goes to the outermost

    def timed(phase, fn):
        def wrapper(*a, **kw):
            if stack:
                return fn(*a, **kw)
            stack.append(phase)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[phase] += time.perf_counter() - t0
                stack.pop()
        return wrapper

    real_load = runner.load

    def load_and_count(*a, **kw):
        model, tok = real_load(*a, **kw)
        model.register_forward_hook(lambda *_: forwards.__setitem__(stack[0] if stack else "other",
                                                                      forwards[stack[0] if stack else "other"] + 1))
        return model, tok

    runner.load = timed("load", load_and_count)
    gen_mod.generate = timed("generate", gen_mod.generate)
    gen_mod.logit_fingerprint = timed("fingerprints", gen_mod.logit_fingerprint)
    levels.calibrate = timed("calibrate", levels.calibrate)
    levels.measure = timed("score", levels.measure)

    out = tempfile.mkdtemp(prefix=f"sweep-bench-{args.phase}-")
    t0 = time.perf_counter()
    result = runner.run_sweep(args.model, args.modules, args.methods, args.layers, out_dir=out, prompts=None,
                              decoding=Decoding(max_new_tokens=args.max_new_tokens), device="cpu", progress=False)
    wall = time.perf_counter() - t0
    seconds["other"] = wall - sum(v for k, v in seconds.items() if k != "other")
    responses = [r for c in result.cells for r in c.responses]
    return {
        "package_file": sfn_merge_plugin.__file__,
        "wall_s": wall,
        "seconds": seconds,
        "forwards": forwards,
        "cells": len(result.cells),
        "prompts": len(result.settings["prompts"]),
        "prompt_ids": result.settings["prompts"],
        "response_tokens": sum(len(r.token_ids) for r in responses),
        "responses_scored": sum(r.evidence.get("nll") is not None for r in responses),
        "cells_per_minute": len(result.cells) / wall * 60,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        "levels": {c.label: [r.level for r in c.responses] for c in result.cells},
        "calibration": result.calibration.as_dict(),
    }


# ---------------------------------------------------------------------------------------------- driver


def run_side(name: str, tree: Path, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--phase", name, "--model", args.model,
           "--modules", args.modules, "--methods", args.methods, "--layers", args.layers,
           "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    print(f"[{name}] {tree}: running ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the sweep failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if not row["package_file"].startswith(str(tree)):
        raise SystemExit(f"{name}: imported {row['package_file']}, not the code under {tree}")
    print(f"[{name}] {row['package_file']}: {row['cells_per_minute']:.2f} cells/min ({row['wall_s']:.0f} s)",
          file=sys.stderr, flush=True)
    return row


def git_head(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip()


def versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def render(doc: dict) -> str:
    s = doc["settings"]
    b, a = doc["before"], doc["after"]
    lines = [f"Sweep on SmolLM2-135M-Instruct (CPU, {s['threads']} threads, shared machine): `--modules {s['modules']} "
             f"--methods {s['methods']} --layers {s['layers']}`, {b['cells']} cells (incl. intact) x {b['prompts']} "
             f"built-in prompts x {s['max_new_tokens']} tokens, greedy.", "",
             f"| | before ({doc['before_commit'][:7]}) | after (this tree) | after / before |",
             "|---|---:|---:|---:|"]

    def row(label, x, y, fmt="{:.1f}", ratio=True):
        r = f"{y / x:.2f}x" if ratio and x else ""
        lines.append(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {r} |")

    row("cells per minute", b["cells_per_minute"], a["cells_per_minute"], "{:.2f}")
    row("wall s", b["wall_s"], a["wall_s"])
    for p in PHASES:
        row(f"  {p} s ({b['forwards'][p]} / {a['forwards'][p]} forwards)", b["seconds"][p], a["seconds"][p])
    row("response tokens", b["response_tokens"], a["response_tokens"], "{:d}", ratio=False)
    row("responses scored by the model", b["responses_scored"], a["responses_scored"], "{:d}", ratio=False)
    if "cpu_s" in b and "cpu_s" in a:  # CPU seconds of the worker: less sensitive to other users of a shared machine
        row("process CPU s", b["cpu_s"], a["cpu_s"])
    row("peak RSS MiB", b["peak_rss_mib"], a["peak_rss_mib"], "{:.0f}")
    lines += ["", f"Levels identical in {doc['same_levels']} of {doc['responses']} responses."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before-tree", type=Path, default=Path("/tmp/sfn_before"),
                   help="a checkout of the BEFORE code (git worktree add /tmp/sfn_before 0695ad1)")
    p.add_argument("--modules", default="o_proj,mlp", help="sweep rows (default o_proj,mlp)")
    p.add_argument("--methods", default="zero,remove", help="default zero,remove")
    p.add_argument("--layers", default="10-20", help="default 10-20")
    p.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    p.add_argument("--threads", type=int, default=2, help="torch threads per side (default 2)")
    p.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct, smollm2_path())")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--render", type=Path, metavar="JSON", help="print the Markdown table of a results file and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", default="after", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from sfn_merge_plugin.smollm2 import smollm2_path

        args.model = smollm2_path()
    if not (args.before_tree / "sfn_merge_plugin").is_dir():
        raise SystemExit(f"{args.before_tree}: no sfn_merge_plugin there; git worktree add {args.before_tree} 0695ad1")
    before = run_side("before", args.before_tree.resolve(), args)
    after = run_side("after", REPO, args)
    pairs = [(x, y) for c in before["levels"] for x, y in zip(before["levels"][c], after["levels"].get(c, []))]
    doc = {
        "command": "python benchmarks/sweep_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "before_commit": git_head(args.before_tree), "after_commit": git_head(REPO) + " + working tree",
        "settings": {"model": args.model, "modules": args.modules, "methods": args.methods, "layers": args.layers,
                     "max_new_tokens": args.max_new_tokens, "threads": args.threads, "prompts": "built-in",
                     "decoding": "greedy", "seed": 0},
        "versions": versions(),
        "before": before, "after": after,
        "speedup": after["cells_per_minute"] / before["cells_per_minute"],
        "responses": len(pairs), "same_levels": sum(x == y for x, y in pairs),
    }
    text = render(doc)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
