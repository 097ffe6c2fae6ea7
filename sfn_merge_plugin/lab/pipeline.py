"""The lab's stages, each one a call into the tool that owns it, and ``run_lab`` that chains them.

  pairs        train (or load) the offline pairs (``lab.pairs``), or take the user's two checkpoints
  delta        ``delta.run_delta``: per-module weight change, figures, the paper's claims; the pair's regime
  merge        ``sfn_swap`` recipes run by mergekit's ``run_merge``; accuracy and tokens (Table 1)
  freeze       the shipped TRL recipes scaled down, run by TRL with ``sfn_trainable`` (Table 2, Fig. 6)
  destruction  ``sweep.run_sweep`` on the reasoning model with automatic output levels (Table 3)

Everything a stage measures lands in ``results.json``; ``lab.report`` draws the report from that file.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sfn_merge_plugin.lab import tasks

STAGES = ("pairs", "delta", "merge", "freeze", "destruction")
RESULTS_NAME = "results.json"
RESULTS_FORMAT = "sfn-lab-results/1"

# Table 1 rows: (label, sfn_swap module selector) - the paper's three swaps
SWAPS = (("o_proj", "o_proj"), ("q,k,v_proj", "qkv"), ("mlp", "mlp"))
# Table 2 rows: Freeze presets of the shipped TRL recipes (trl_configs/), in the paper's order
FREEZE_ROWS = ("emb_head", "oproj", "qkvo", "all")
DESTROY_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
DESTROY_METHODS = "zero,reinit,remove"
PAPER_DESTROY_LAYERS = "0.08-0.48"  # the paper's blocks 5-30 of 64, as a fraction of depth
# regime thresholds on the largest relative change ||B - A|| / ||A|| of a linear module kind
SMALL_CHANGE, NEW_CIRCUIT = 0.2, 0.5


def _sizes():
    from sfn_merge_plugin.lab import pairs

    return {
        "full": dict(recipes=pairs.FULL, heldout=200, probes=40, max_new_tokens=48, eval_batch=256,
                     freeze_seeds=3, freeze_pairs=("skill", "custom"),
                     freeze={"skill": dict(steps=40, batch=32, lr=3e-4),  # half the skill SFT's 80 steps
                             "new_circuit": dict(steps=1000, batch=32, lr=3e-3),  # the circuit SFT's budget
                             "custom": dict(steps=40, batch=32, lr=1e-5)},
                     freeze_max_length=128, destroy_layers="1-2", sweep_problems=8, sweep_probes=8,
                     sweep_tokens=40),
        "smoke": dict(recipes=pairs.SMOKE, heldout=12, probes=5, max_new_tokens=40, eval_batch=64,
                      freeze_seeds=2, freeze_pairs=("skill", "new_circuit", "custom"),
                      freeze={"skill": dict(steps=2, batch=4, lr=3e-4), "new_circuit": dict(steps=2, batch=4, lr=3e-3),
                              "custom": dict(steps=2, batch=4, lr=1e-5)},
                      freeze_max_length=96, destroy_layers="1", sweep_problems=2, sweep_probes=2,
                      sweep_tokens=12),
    }


# what changes for the user's checkpoints: real reasoning models think for hundreds of tokens
REAL = {"full": dict(max_new_tokens=2048, eval_batch=64, sweep_tokens=512, freeze_max_length=512),
        "smoke": dict(max_new_tokens=40, eval_batch=64, sweep_tokens=12, freeze_max_length=96)}


class LabError(SfnError):
    """A lab input that cannot work; the message names it and the fix."""


@dataclass
class PairRef:
    """One base/reasoning pair as the stages see it."""

    name: str  # new_circuit | skill | custom
    seed: int | None
    base: str
    reasoning: str
    description: str
    built: bool  # trained by the lab (its tiny formats apply) or the user's checkpoints
    trusted: bool = True
    training: dict = field(default_factory=dict)
    sft_mix: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name if self.seed is None else f"{self.name}-s{self.seed}"


@dataclass
class Context:
    out: Path  # the folder being written (renamed into place at the end)
    size: dict
    problems: list
    probes: list
    device: str
    progress: bool
    keep_models: bool
    freeze_seeds: int
    destroy_layers: str | None
    timing: dict = field(default_factory=dict)
    worker: object = None  # freeze_run.Worker, started early so its imports overlap the training
    freeze_pairs: tuple = ()

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[sfn lab] {message}", file=sys.stderr, flush=True)


# --- stage: pairs ------------------------------------------------------------------------------------

def stage_pairs(ctx: Context, refs: list) -> dict:
    """Evaluate both models of every pair (chat format; for the lab's pairs also the plain pretraining
    format and chat with ``<think>`` already written, which show whether the base has the skill)."""
    from sfn_merge_plugin.lab import measure

    out = {}
    for ref in refs:
        entry = {"name": ref.name, "seed": ref.seed, "description": ref.description, "base": ref.base,
                 "reasoning": ref.reasoning, "built": ref.built, "trusted": ref.trusted, "training": ref.training,
                 "eval": {}}
        for role, path in (("base", ref.base), ("reasoning", ref.reasoning)):
            model, tok = measure.load_model(path, ctx.device)
            evals = {"chat": _evaluate(ctx, model, tok, "chat", probes=ref.built)}
            if ref.built:
                evals["plain"] = _evaluate(ctx, model, tok, "plain")
                evals["forced"] = _evaluate(ctx, model, tok, "forced")
            entry["eval"][role] = evals
            del model
        out[ref.id] = entry
        e = entry["eval"]
        ctx.log(f"{ref.id}: chat accuracy base {e['base']['chat']['accuracy']:.3f}, "
                f"reasoning {e['reasoning']['chat']['accuracy']:.3f}")
    return out


def _evaluate(ctx: Context, model, tok, fmt: str, probes: bool = False) -> dict:
    from sfn_merge_plugin.lab import measure

    return measure.evaluate(model, tok, ctx.problems, fmt=fmt, probes=ctx.probes if probes else None,
                            max_new_tokens=ctx.size["max_new_tokens"], batch_size=ctx.size["eval_batch"]).as_dict()


# --- stage: delta ------------------------------------------------------------------------------------

def stage_delta(ctx: Context, refs: list) -> dict:
    """``run_delta`` per pair; the regime is read off the largest relative change of a linear module."""
    from sfn_merge_plugin.delta import run_delta
    from sfn_merge_plugin.delta.summary import LINEAR_KINDS

    out = {}
    for ref in refs:
        folder = ctx.out / "delta" / ref.id
        summary = run_delta(ref.base, ref.reasoning, str(folder), labels=["reasoning"], every=1,
                            progress=False)
        pair = summary["pairs"][0]
        per_kind = {k: {"rel_delta": v.get("rel_delta"), "norm_delta": v.get("norm_delta"),
                        "mean_layer_norm_delta": v.get("mean_layer_norm_delta"),
                        "mean_layer_rel_delta": v.get("mean_layer_rel_delta")}
                    for k, v in pair["per_kind"].items()}
        linear = {k: v["rel_delta"] for k, v in per_kind.items() if k in LINEAR_KINDS and v["rel_delta"] is not None}
        out[ref.id] = {
            "folder": str(folder), "summary": str(folder / "summary.json"), "per_kind": per_kind,
            "claims": pair["claims"], "max_linear_rel_delta": max(linear.values()) if linear else None,
            "regime": regime(linear),
            "figures": sorted(str(p) for p in folder.glob("*.png")),
        }
        ctx.log(f"{ref.id}: relative change of linear modules up to {out[ref.id]['max_linear_rel_delta']:.3f} "
                f"-> {out[ref.id]['regime']}")
    return out


def regime(linear_rel: dict) -> str:
    """``small change`` (every linear kind moved <= 0.2 of its norm: the paper's regime), ``new circuit``
    (the median kind moved >= 0.5) or ``intermediate``."""
    if not linear_rel:
        return "unknown"
    values = sorted(linear_rel.values())
    if values[-1] <= SMALL_CHANGE:
        return "small change"
    if values[len(values) // 2] >= NEW_CIRCUIT:
        return "new circuit"
    return "intermediate"


# --- stage: merge ------------------------------------------------------------------------------------

def swap_recipe(base: str, reasoning: str, modules: str, dtype: str) -> dict:
    """An ``sfn_swap`` recipe: ``modules`` of every layer from the reasoning model into the base."""
    return {"merge_method": "sfn_swap", "base_model": base, "models": [{"model": reasoning}],
            "parameters": {"modules": modules, "layers": "all"}, "dtype": dtype}


def stored_dtype(path: str) -> str:
    """The dtype a model's weights are stored in (from the safetensors headers), as mergekit spells it."""
    from sfn_merge_plugin.checkpoint import open_checkpoint

    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    dtypes = {e.dtype for e in open_checkpoint(path).tensors.values()}
    for d in ("F32", "BF16", "F16"):
        if d in dtypes:
            return names[d]
    return "float32"


def run_recipe(recipe: dict, out: Path) -> Path:
    """mergekit's own ``run_merge`` (what ``mergekit-yaml`` runs), with SfN's hook active; atomic."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    import mergekit.merge_methods  # noqa: F401  (the start-up hook registers sfn_swap here)

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    config = MergeConfiguration.model_validate(recipe)
    run_merge(config, str(tmp), MergeOptions(quiet=True, copy_tokenizer=True),
              config_source=yaml.safe_dump(recipe, sort_keys=False))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def stage_merge(ctx: Context, refs: list) -> dict:
    """Table 1: base + each module kind of the reasoning model, evaluated like the pair."""
    import yaml

    from sfn_merge_plugin.lab import measure

    out = {}
    for ref in refs:
        dtype = stored_dtype(ref.base)
        rows = {}
        for label, modules in SWAPS:
            slug = modules.replace(",", "_")
            recipe = swap_recipe(ref.base, ref.reasoning, modules, dtype)
            folder = ctx.out / "merge" / ref.id
            folder.mkdir(parents=True, exist_ok=True)
            recipe_file = folder / f"{slug}_swap.yml"
            recipe_file.write_text(f"# sfn lab: Table 1, {label} of the reasoning model into the base\n"
                                   f"# rerun: mergekit-yaml {recipe_file.name} OUT_DIR\n"
                                   + yaml.safe_dump(recipe, sort_keys=False))
            t0 = time.perf_counter()
            model_dir = run_recipe(recipe, folder / slug)
            merge_s = time.perf_counter() - t0
            model, tok = measure.load_model(str(model_dir), ctx.device)
            row = {"modules": modules, "recipe": str(recipe_file), "merge_seconds": merge_s,
                   "provenance": str(model_dir / "sfn_provenance.json"),
                   "eval": _evaluate(ctx, model, tok, "chat", probes=ref.built)}
            if ref.built:
                row["eval_forced"] = _evaluate(ctx, model, tok, "forced")
            del model
            provenance = json.loads((model_dir / "sfn_provenance.json").read_text())
            row["tensors_from_reasoning"] = sum(1 for t in provenance["tensors"].values() if t["source"] == "donor")
            row["tensors_total"] = len(provenance["tensors"])
            if ctx.keep_models:
                row["model"] = str(model_dir)
            else:
                shutil.rmtree(model_dir)
            rows[label] = row
            ctx.log(f"{ref.id}: base + {label} of reasoning: accuracy {row['eval']['accuracy']:.3f}")
        out[ref.id] = {"dtype": dtype, "rows": rows}
    return out


# --- stage: freeze -----------------------------------------------------------------------------------

def stage_freeze(ctx: Context, refs: list) -> dict:
    """Table 2: from each base, the four Freeze rows of the shipped TRL recipes, ``freeze_seeds`` seeds each."""
    import torch

    from sfn_merge_plugin.lab import freeze_run, measure

    out = {}
    for ref in refs:
        if ref.name not in ctx.freeze_pairs:
            ctx.log(f"{ref.id}: Freeze skipped (--freeze-pairs {','.join(ctx.freeze_pairs)})")
            continue
        budget = dict(ctx.size["freeze"][ref.name])
        folder = ctx.out / "freeze" / ref.id
        _, tok = measure.load_tokenizer_only(ref.base)
        mix = ref.sft_mix or {"chat_think": 1.0}
        data = freeze_run.write_sft_data(tok, folder / "data.jsonl", mix, budget["steps"] * budget["batch"],
                                         seed=ref.seed or 0, exclude={p.question for p in ctx.problems})
        rows = {}
        runs = [(preset, s) for preset in FREEZE_ROWS for s in range(ctx.freeze_seeds)]
        for preset, s in _bar(runs, f"freeze {ref.id}", ctx.progress):
            result = ctx.worker.run(dict(
                preset=preset, model=ref.base, data_file=str(data), out_dir=str(folder / f"{preset}-seed{s}"),
                steps=budget["steps"], batch=budget["batch"], lr=budget["lr"], seed=s,
                max_length=ctx.size["freeze_max_length"], threads=torch.get_num_threads(),
                eval_spec=dict(heldout=len(ctx.problems), max_new_tokens=ctx.size["max_new_tokens"],
                               batch_size=ctx.size["eval_batch"])))
            rows.setdefault(preset, []).append(result)
        out[ref.id] = {"budget": budget, "data": str(data), "mix": mix, "rows": rows}
        summary = ", ".join(f"{p} {sum(r['eval']['accuracy'] for r in rows[p]) / len(rows[p]):.3f}" for p in rows)
        ctx.log(f"{ref.id}: freeze accuracy (mean of {ctx.freeze_seeds} seeds): {summary}")
    return out


def _bar(items, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, leave=False)


# --- stage: destruction ------------------------------------------------------------------------------

def destruction_prompts(ctx: Context, ref: PairRef) -> list | None:
    """The lab's pairs: chat probes (conversation) and held-out problems (reasoning, graded); the user's
    checkpoints: the sweep's built-in prompts plus the same problems."""
    from sfn_merge_plugin.sweep.prompts import BUILTIN, Prompt

    problems = [Prompt(f"chain{i}", p.question, answer=str(p.answer), grader="aime")
                for i, p in enumerate(ctx.problems[: ctx.size["sweep_problems"]])]
    if not ref.built:
        return list(BUILTIN) + problems
    chat = [Prompt(f"chat{i}", user) for i, (user, _) in enumerate(ctx.probes[: ctx.size["sweep_probes"]])]
    return chat + problems


def stage_destruction(ctx: Context, refs: list) -> dict:
    """Table 3: Zero / ReInit / Remove on the reasoning model, levels I-IV graded by the sweep."""
    from sfn_merge_plugin.sweep import run_sweep
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.report import table_rows

    out = {}
    for ref in refs:
        layers = ctx.destroy_layers or (ctx.size["destroy_layers"] if ref.built else PAPER_DESTROY_LAYERS)
        folder = ctx.out / "destruction" / ref.id
        calibration = tasks.chat_probes(8, seed=1) if ref.built else None
        result = run_sweep(ref.reasoning, DESTROY_MODULES, DESTROY_METHODS, layers, out_dir=str(folder),
                           prompts=destruction_prompts(ctx, ref),
                           decoding=Decoding(max_new_tokens=ctx.size["sweep_tokens"], batch_size=64),
                           calibration=calibration, progress=ctx.progress)
        out[ref.id] = {
            "folder": str(folder), "layers": layers, "table": table_rows(result),
            "classes": [{"cells": labels, "reason": why} for labels, why in result.classes],
            "caveats": list(result.caveats), "notes": list(result.notes),
            "calibration_reliable": bool(result.calibration.reliable),
        }
        ctx.log(f"{ref.id}: destruction sweep of layers {layers}: {len(result.cells)} cells")
    return out


# --- the whole lab -----------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    env = os.environ.get("SFN_LAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sfn" / "lab"


def check_output(out: Path) -> None:
    """The output folder: new, empty, or a previous lab's (then it is replaced at the end)."""
    if out.exists() and not out.is_dir():
        raise LabError(f"output {out} exists and is a file; give a folder with -o")
    if out.is_dir() and any(out.iterdir()) and not (out / RESULTS_NAME).is_file():
        raise LabError(f"output folder {out} is not empty and holds no {RESULTS_NAME} of an earlier lab; "
                       "choose a new folder with -o (the lab replaces only its own earlier output)")
    probe = out if out.exists() else out.parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise LabError(f"output {out}: cannot write in {probe}; choose another folder with -o")


def check_inputs(base, reasoning, stages, seeds, freeze_seeds) -> None:
    """Every argument problem, before any model is trained or loaded."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise LabError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    if (base is None) != (reasoning is None):
        raise LabError("give both --base and --reasoning (a base model and its reasoning fine-tune), or neither "
                       "to use the lab's own offline pairs")
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
    if base is not None:
        from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint

        layouts = [layout_of(open_checkpoint(str(p))) for p in (base, reasoning)]
        a, b = layouts
        if (a.architecture, a.num_layers) != (b.architecture, b.num_layers):
            raise LabError(f"--base is {a.architecture} with {a.num_layers} layers but --reasoning is "
                           f"{b.architecture} with {b.num_layers}: the stethoscopes compare a model with its own fine-tune")


def pair_refs(base, reasoning, seeds, recipes, cache_dir, progress) -> list:
    """The pairs to study: the user's checkpoints, or the lab's two offline pairs per seed (trained or cached)."""
    from sfn_merge_plugin.checkpoint import resolve_path
    from sfn_merge_plugin.lab import pairs

    if base is not None:
        return [PairRef("custom", None, resolve_path(str(base)), resolve_path(str(reasoning)),
                        "the user's base model and its reasoning fine-tune", built=False,
                        sft_mix={"chat_think": 1.0})]
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
            report: bool = True) -> dict:
    """Run the lab and write ``out_dir`` (results.json, tables, figures, report.md, report.html); return
    the results. Every argument is checked before any work; the folder is built under a temporary name
    and renamed into place when everything is written (an earlier lab's output is replaced only then)."""
    import torch

    sizes = _sizes()
    if size not in sizes:
        raise LabError(f"unknown size {size!r}; choose one of {', '.join(sizes)}")
    stages = tuple(stages)
    check_inputs(base, reasoning, stages, seeds, freeze_seeds)
    unknown = [p for p in (freeze_pairs or ()) if p not in ("new_circuit", "skill", "custom")]
    if unknown:
        raise LabError(f"--freeze-pairs: unknown pair(s) {', '.join(unknown)}; choose from new_circuit, skill")
    if max_new_tokens is not None and int(max_new_tokens) < 1:
        raise LabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    out = Path(os.path.expanduser(str(out_dir))).absolute()
    check_output(out)
    settings = dict(sizes[size], **(REAL[size] if base is not None else {}))
    if max_new_tokens is not None:
        settings["max_new_tokens"] = int(max_new_tokens)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # for the Freeze processes: idle threads sleep
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Freeze data is a local file: no hub lookups
    # smoke: one thread, so a busy machine cannot stall it (OpenMP threads spin-wait on each other)
    torch.set_num_threads(threads or (1 if size == "smoke" else max(1, min(2, torch.get_num_threads()))))
    _quiet_libraries()
    t_start = time.perf_counter()
    work = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx = Context(work, settings, tasks.heldout_problems(settings["heldout"]), tasks.chat_probes(settings["probes"]),
                  "cuda" if torch.cuda.is_available() else "cpu", progress, keep_models,
                  freeze_seeds or settings["freeze_seeds"], destroy_layers,
                  freeze_pairs=tuple(freeze_pairs or settings["freeze_pairs"]))
    cache = Path(cache_dir or default_cache_dir())
    try:
        with contextlib.ExitStack() as stack:
            if "freeze" in stages:
                from sfn_merge_plugin.lab.freeze_run import Worker

                ctx.worker = stack.enter_context(Worker(work / "freeze" / "worker.log"))
            results = _run_stages(ctx, stages, base, reasoning, seeds, cache, size)
        results["settings"]["cache_dir"] = str(cache)
        ctx.timing["total"] = time.perf_counter() - t_start
        _write_json(work / RESULTS_NAME, _relative(results, work, out))
        if report:
            from sfn_merge_plugin.lab.report import write_report

            write_report(work)
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return json.loads((out / RESULTS_NAME).read_text())


def _run_stages(ctx: Context, stages, base, reasoning, seeds, cache: Path, size: str) -> dict:
    t0 = time.perf_counter()
    refs = pair_refs(base, reasoning, seeds, ctx.size["recipes"], cache, ctx.progress)
    ctx.timing["train_pairs"] = time.perf_counter() - t0
    results = {"format": RESULTS_FORMAT, "settings": _settings_record(ctx, size, seeds, base, reasoning, stages),
               "pairs": {r.id: {} for r in refs}, "timing": ctx.timing}
    runners = {"pairs": stage_pairs, "delta": stage_delta, "merge": stage_merge, "freeze": stage_freeze,
               "destruction": stage_destruction}
    for stage in STAGES:
        if stage not in stages and stage != "pairs":
            continue
        ctx.log(f"stage {stage}")
        t0 = time.perf_counter()
        for pid, value in runners[stage](ctx, refs).items():
            results["pairs"][pid][stage] = value
        ctx.timing[stage] = time.perf_counter() - t0
    return results


def _quiet_libraries() -> None:
    """No per-file progress bars or deprecation chatter from transformers/mergekit: the lab prints its own."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("mergekit").setLevel(logging.WARNING)


def _settings_record(ctx, size, seeds, base, reasoning, stages) -> dict:
    import platform

    import torch

    from sfn_merge_plugin import __version__

    return {"size": size, "seeds": [int(s) for s in seeds] if base is None else None, "base": base,
            "reasoning": reasoning, "stages": list(stages), "heldout_problems": len(ctx.problems),
            "chat_probes": len(ctx.probes), "freeze_seeds": ctx.freeze_seeds, "freeze_rows": list(FREEZE_ROWS),
            "freeze_pairs": list(ctx.freeze_pairs),
            "swaps": [list(s) for s in SWAPS], "max_new_tokens": ctx.size["max_new_tokens"],
            "device": ctx.device, "torch_threads": torch.get_num_threads(), "sfn_version": __version__,
            "torch_version": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}


def _relative(obj, work: Path, final: Path):
    """Paths inside the work folder, rewritten to the folder's final name."""
    if isinstance(obj, dict):
        return {k: _relative(v, work, final) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, work, final) for v in obj]
    if isinstance(obj, str) and str(work) in obj:
        return obj.replace(str(work), str(final))
    return obj


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _replace(work: Path, out: Path) -> None:
    """Move the finished folder into place; an earlier lab output is replaced only now."""
    old = None
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
