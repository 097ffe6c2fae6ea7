"""The lab's stages, each one a call into the tool that owns it; each returns {pair id: what it measured}.

  pairs        evaluate both models of every pair (chat; for the lab's pairs also plain text and forced <think>)
  delta        ``delta.run_delta``: per-module weight change, figures, the paper's claims; the pair's regime
  merge        ``sfn_swap`` rows swapped in memory by the intervention engine; accuracy and tokens (Table 1)
  freeze       the shipped TRL recipes scaled down, run by TRL with ``sfn_trainable`` (Table 2, Fig. 6)
  destruction  ``sweep.run_sweep`` on the reasoning model with automatic output levels (Table 3)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sfn_merge_plugin.lab import tasks
from sfn_merge_plugin.lab.config import (DESTROY_METHODS, DESTROY_MODULES, FREEZE_ROWS, NEW_CIRCUIT,
                                         PAPER_DESTROY_LAYERS, SMALL_CHANGE, SWAPS, LabSize)


@dataclass
class PairRef:
    """One base/reasoning pair as the stages see it."""

    name: str  # new_circuit | skill | custom | smollm2
    seed: int | None  # pair seed (None: the user's checkpoints)
    base: str  # base model folder
    reasoning: str  # reasoning model folder
    description: str  # one line for the report
    built: bool  # trained by the lab on its tiny tokenizer (its plain/forced formats and probes apply)
    trusted: bool = True  # passed its training loss checks
    training: dict = field(default_factory=dict)  # lab.pairs.training_record (empty for the user's models)
    sft_mix: dict = field(default_factory=dict)  # example kinds of its reasoning SFT (the Freeze data)
    probes: bool | None = None  # chat probes apply (default: built)
    task: str = tasks.CHAIN.name  # the lab task its models are trained and graded on (tasks.task_named)

    @property
    def id(self) -> str:
        return self.name if self.seed is None else f"{self.name}-s{self.seed}"

    @property
    def uses_probes(self) -> bool:
        return self.built if self.probes is None else self.probes


@dataclass
class Context:
    """What every stage reads: the folder being written, the size, the problems, the switches."""

    out: Path  # the folder being written (renamed into place at the end)
    publish: Path  # the folder's final name (what files written for later use must point at)
    size: LabSize  # sizes of every stage
    problems: list  # held-out chain problems (a pair on another task: ``problems_for``)
    probes: list  # chat probes
    device: str  # "cpu" or "cuda"
    progress: bool  # progress bars and stage messages on stderr
    keep_models: bool  # keep merged models on disk
    freeze_seeds: int  # training seeds per Freeze row
    destroy_layers: str | None  # --destroy-layers (None: the pair's default)
    freeze_pairs: tuple = ()  # pair names the Freeze stage trains
    timing: dict = field(default_factory=dict)  # stage -> seconds
    workers: list = field(default_factory=list)  # freeze_workers.Worker each, started early so their imports overlap the training

    def problems_for(self, ref: PairRef) -> list:
        """The held-out problems of the pair's task, as many as ``problems`` (the same list for the chain)."""
        return tasks.task_named(ref.task).heldout(len(self.problems))

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[sfn lab] {message}", file=sys.stderr, flush=True)


def _evaluate(ctx: Context, ref: PairRef, model, tok, fmt: str, probes: bool = False) -> dict:
    from sfn_merge_plugin.lab import measure

    return measure.evaluate(model, tok, ctx.problems_for(ref), fmt=fmt, probes=ctx.probes if probes else None,
                            max_new_tokens=ctx.size.max_new_tokens, batch_size=ctx.size.eval_batch).as_dict()


# --- pairs ------------------------------------------------------------------------------------------

def stage_pairs(ctx: Context, refs: list) -> dict:
    """Evaluate both models of every pair (chat format; for the lab's pairs also the plain pretraining
    format and chat with ``<think>`` already written, which show whether the base has the skill)."""
    from sfn_merge_plugin.lab import measure

    out = {}
    for ref in refs:
        entry = {"name": ref.name, "seed": ref.seed, "description": ref.description, "base": ref.base,
                 "reasoning": ref.reasoning, "built": ref.built, "trusted": ref.trusted, "training": ref.training,
                 "task": ref.task, "task_description": tasks.task_named(ref.task).description, "eval": {}}
        for role, path in (("base", ref.base), ("reasoning", ref.reasoning)):
            model, tok = measure.load_model(path, ctx.device)
            evals = {"chat": _evaluate(ctx, ref, model, tok, "chat", probes=ref.uses_probes)}
            if ref.built:
                evals["plain"] = _evaluate(ctx, ref, model, tok, "plain")
                evals["forced"] = _evaluate(ctx, ref, model, tok, "forced")
            entry["eval"][role] = evals
            del model
        out[ref.id] = entry
        e = entry["eval"]
        ctx.log(f"{ref.id}: chat accuracy base {e['base']['chat']['accuracy']:.3f}, "
                f"reasoning {e['reasoning']['chat']['accuracy']:.3f}")
    return out


# --- delta ------------------------------------------------------------------------------------------

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


def stage_delta(ctx: Context, refs: list) -> dict:
    """``run_delta`` per pair; the regime is read off the largest relative change of a linear module."""
    from sfn_merge_plugin.delta import run_delta
    from sfn_merge_plugin.delta.summary import LINEAR_KINDS

    out = {}
    for ref in refs:
        folder = ctx.out / "delta" / ref.id
        summary = run_delta(ref.base, ref.reasoning, str(folder), labels=["reasoning"], every=1, progress=False)
        pair = summary["pairs"][0]
        per_kind = {k: {"rel_delta": v.get("rel_delta"), "norm_delta": v.get("norm_delta"),
                        "mean_layer_norm_delta": v.get("mean_layer_norm_delta"),
                        "mean_layer_rel_delta": v.get("mean_layer_rel_delta")}
                    for k, v in pair["per_kind"].items()}
        linear = {k: v["rel_delta"] for k, v in per_kind.items() if k in LINEAR_KINDS and v["rel_delta"] is not None}
        out[ref.id] = {
            "folder": str(folder), "summary": str(folder / "summary.json"), "per_kind": per_kind,
            "claims": pair["claims"], "max_linear_rel_delta": max(linear.values()) if linear else None,
            "regime": regime(linear), "figures": sorted(str(p) for p in folder.glob("*.png")),
        }
        ctx.log(f"{ref.id}: relative change of linear modules up to {out[ref.id]['max_linear_rel_delta']:.3f} "
                f"-> {out[ref.id]['regime']}")
    return out


# --- merge ------------------------------------------------------------------------------------------

def stage_merge(ctx: Context, refs: list) -> dict:
    """Table 1: base + each module kind of the reasoning model, evaluated like the pair. The rows are measured
    in memory by the intervention engine (base loaded once, each swap applied and restored, the same bytes as
    mergekit + ``sfn_swap``); the recipes are still written for users, and run by mergekit only for --keep-models."""
    from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint
    from sfn_merge_plugin.lab.mapping import localize_pair, pack_curve
    from sfn_merge_plugin.lab.merging import recipe_text, run_recipe, stored_dtype, swap_recipe
    from sfn_merge_plugin.localize import merge_table_in_memory
    from sfn_merge_plugin.outputs import atomic_write
    from sfn_merge_plugin.selectors import select

    out = {}
    for ref in refs:
        dtype = stored_dtype(ref.base)
        folder = ctx.out / "merge" / ref.id
        layout = layout_of(open_checkpoint(ref.base))

        def evaluate(model, tok, ref=ref):
            t0 = time.perf_counter()
            row = {"eval": _evaluate(ctx, ref, model, tok, "chat", probes=ref.uses_probes)}
            if ref.built:
                row["eval_forced"] = _evaluate(ctx, ref, model, tok, "forced")
            row["eval_seconds"] = time.perf_counter() - t0
            return row

        measured = merge_table_in_memory(ref.base, ref.reasoning, SWAPS, evaluate, device=ctx.device, progress=False)
        rows = {}
        for label, modules in SWAPS:
            slug = modules.replace(",", "_")
            recipe = swap_recipe(ref.base, ref.reasoning, modules, dtype)
            recipe_file = atomic_write(folder / f"{slug}_swap.yml", recipe_text(recipe, label, f"{slug}_swap.yml"))
            row = {"modules": modules, "recipe": str(recipe_file), "engine": "in memory (sfn intervention)",
                   "provenance": None, **measured[label]}
            row["tensors_from_reasoning"] = len(select(layout, modules, "all"))
            row["tensors_total"] = len(layout.tensors)
            if ctx.keep_models:  # the merged model on disk, written by mergekit for the user
                t0 = time.perf_counter()
                model_dir = run_recipe(recipe, folder / slug)
                row["merge_seconds"] = time.perf_counter() - t0
                row["model"] = str(model_dir)
                row["provenance"] = str(model_dir / "sfn_provenance.json")
                provenance = json.loads((model_dir / "sfn_provenance.json").read_text())
                donor = sum(1 for t in provenance["tensors"].values() if t["source"] == "donor")
                if donor != row["tensors_from_reasoning"]:
                    raise RuntimeError(f"{ref.id} {label}: mergekit took {donor} tensors from the reasoning model, "
                                       f"the engine {row['tensors_from_reasoning']}; please report this")
            rows[label] = row
            ctx.log(f"{ref.id}: base + {label} of reasoning: accuracy {row['eval']['accuracy']:.3f}")
        packs = pack_curve(ref.base, ref.reasoning, folder / "packs", ctx.size, ctx.device,
                           lambda m, t, ref=ref: _evaluate(ctx, ref, m, t, "chat")["accuracy"])
        exact = next(r for r in packs["rows"] if r["pack"] == "exact")
        packs["exact_equals_table1"] = exact["accuracy"] == rows["o_proj"]["eval"]["accuracy"]
        if not packs["exact_equals_table1"]:  # the same tensors, greedy: the same answers
            raise RuntimeError(f"{ref.id}: base + exact o_proj pack scored {exact['accuracy']}, Table 1's o_proj row "
                               f"{rows['o_proj']['eval']['accuracy']}; please report this")
        out[ref.id] = {"dtype": dtype, "rows": rows, "packs": packs,
                       "localize": localize_pair(ref.base, ref.reasoning, folder / "localize", ctx.size, ctx.device,
                                                 ctx.progress, task=ref.task)}
        ctx.log(f"{ref.id}: localization map, gap {out[ref.id]['localize']['gap']['value']:+.3f}")
    return out


# --- freeze -----------------------------------------------------------------------------------------

def stage_freeze(ctx: Context, refs: list) -> dict:
    """Table 2: from each base, the four Freeze rows of the shipped TRL recipes, ``freeze_seeds`` seeds each."""
    import torch

    from sfn_merge_plugin.lab import freeze_run, freeze_workers, measure

    out = {}
    for ref in refs:
        if ref.name not in ctx.freeze_pairs:
            ctx.log(f"{ref.id}: Freeze skipped (--freeze-pairs {','.join(ctx.freeze_pairs)})")
            continue
        budget = ctx.size.freeze[ref.name]
        folder = ctx.out / "freeze" / ref.id
        _, tok = measure.load_tokenizer_only(ref.base)
        mix = ref.sft_mix or {"chat_think": 1.0}
        data = freeze_run.write_sft_data(tok, folder / "data.jsonl", mix, budget.steps * budget.batch,
                                         seed=ref.seed or 0, exclude={p.question for p in ctx.problems_for(ref)},
                                         task=ref.task)
        runs = [(preset, s) for preset in FREEZE_ROWS for s in range(ctx.freeze_seeds)]
        threads = max(1, torch.get_num_threads() // len(ctx.workers))  # the runs share this process's threads
        jobs = [dict(
            preset=preset, model=ref.base, data_file=str(data), out_dir=str(folder / f"{preset}-seed{s}"),
            steps=budget.steps, batch=budget.batch, lr=budget.lr, seed=s,
            max_length=ctx.size.freeze_max_length, threads=threads,
            publish=[str(ctx.out), str(ctx.publish)],
            eval_spec=dict(heldout=len(ctx.problems), task=ref.task, max_new_tokens=ctx.size.max_new_tokens,
                           batch_size=ctx.size.eval_batch)) for preset, s in runs]
        with _bar(None, f"freeze {ref.id}", ctx.progress, total=len(jobs)) as bar:
            results = freeze_workers.run_all(ctx.workers, jobs, done=bar.update)
        rows = {}
        for (preset, _), result in zip(runs, results):
            rows.setdefault(preset, []).append(result)
        out[ref.id] = {"budget": {"steps": budget.steps, "batch": budget.batch, "lr": budget.lr}, "data": str(data),
                       "mix": mix, "rows": rows}
        summary = ", ".join(f"{p} {sum(r['eval']['accuracy'] for r in rows[p]) / len(rows[p]):.3f}" for p in rows)
        ctx.log(f"{ref.id}: freeze accuracy (mean of {ctx.freeze_seeds} seeds): {summary}")
    return out


def _bar(items, desc, enabled, total=None):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, leave=False, total=total)


# --- destruction ------------------------------------------------------------------------------------

def destruction_prompts(ctx: Context, ref: PairRef) -> list:
    """The lab's pairs: chat probes (conversation) and held-out problems (reasoning, graded); the user's
    checkpoints: the sweep's built-in prompts plus the same problems."""
    from sfn_merge_plugin.sweep.prompts import BUILTIN, Prompt

    problems = [Prompt(f"{ref.task}{i}", p.question, answer=str(p.answer), grader="aime")
                for i, p in enumerate(ctx.problems_for(ref)[: ctx.size.sweep_problems])]
    if not ref.uses_probes:
        return list(BUILTIN) + problems
    chat = [Prompt(f"chat{i}", user) for i, (user, _) in enumerate(ctx.probes[: ctx.size.sweep_probes])]
    return chat + problems


def selected_layers(model_path: str, spec: str) -> list:
    """The layer indices a layer selector picks on a model (``0.5-0.8`` on 30 layers -> 15..23)."""
    from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint
    from sfn_merge_plugin.selectors import parse_layers

    return list(parse_layers(spec).resolve(layout_of(open_checkpoint(model_path)).num_layers))


def stage_destruction(ctx: Context, refs: list) -> dict:
    """Table 3: Zero / ReInit / Remove on the reasoning model, levels I-IV graded by the sweep."""
    from sfn_merge_plugin.sweep import run_sweep
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.report import table_rows

    out = {}
    for ref in refs:
        layers = ctx.destroy_layers or (ctx.size.destroy_layers if ref.built else PAPER_DESTROY_LAYERS)
        chosen = selected_layers(ref.reasoning, layers)
        folder = ctx.out / "destruction" / ref.id
        calibration = tasks.chat_probes(8, seed=1) if ref.uses_probes else None
        result = run_sweep(ref.reasoning, DESTROY_MODULES, DESTROY_METHODS, layers, out_dir=str(folder),
                           prompts=destruction_prompts(ctx, ref),
                           decoding=Decoding(max_new_tokens=ctx.size.sweep_tokens, batch_size=ctx.size.sweep_batch),
                           calibration=calibration, progress=ctx.progress)
        out[ref.id] = {
            "folder": str(folder), "layers": layers, "layers_selected": chosen, "table": table_rows(result),
            "classes": [{"cells": labels, "reason": why} for labels, why in result.classes],
            "caveats": list(result.caveats), "notes": list(result.notes),
            "calibration_reliable": bool(result.calibration.reliable),
        }
        ctx.log(f"{ref.id}: destruction sweep of layers {layers} (= {format_layers(chosen)}): {len(result.cells)} cells")
    return out


def format_layers(layers: list) -> str:
    """[15, 16, ..., 23] -> "15-23"; [0, 1, 5] -> "0-1,5"."""
    parts, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(parts) or "none"


RUNNERS = {"pairs": stage_pairs, "delta": stage_delta, "merge": stage_merge, "freeze": stage_freeze,
           "destruction": stage_destruction}
