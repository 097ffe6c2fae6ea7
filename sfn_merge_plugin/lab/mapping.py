"""The Merge stage's localization map per pair (``sfn localize`` on the pair's task): which module
kind in which layer window recovers (sufficiency) or destroys (necessity) the pair's gap, with 95% intervals."""

from __future__ import annotations

from pathlib import Path


def localize_pair(base: str, reasoning: str, folder: Path, size, device: str, progress: bool,
                  task: str = "chain") -> dict:
    """Run the map into ``folder`` (map.csv, map.json, sufficiency.png, necessity.png, summary.md) and return
    what the report shows: the gap, the summary sentences, the heatmaps and every cell's numbers."""
    from sfn_merge_plugin.localize import MapConfig, run_map
    from sfn_merge_plugin.localize.report import map_json, row_dict, summary_lines

    from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint

    depth = layout_of(open_checkpoint(base)).num_layers  # a window past the model is one window of every layer
    config = MapConfig(base, reasoning, task=task, out=str(folder), window=min(size.localize_window, depth),
                       problems=size.localize_problems, max_new_tokens=size.localize_tokens,
                       chat_prompts=size.localize_chat_prompts, batch_size=size.eval_batch, device=device,
                       progress=progress)
    result = run_map(config)
    doc = map_json(result)
    return {
        "folder": str(folder), "path": str(folder / "map.csv"),
        "figures": [str(folder / f"{d}.png") for d in config.directions if (folder / f"{d}.png").is_file()],
        "window": config.window, "problems": config.problems, "max_new_tokens": config.max_new_tokens,
        "gap": doc["gap"], "base_accuracy": doc["base_accuracy"], "tuned_accuracy": doc["tuned_accuracy"],
        "summary_lines": summary_lines(result), "timing": doc["timing"],
        "cells": [row_dict(r) for r in result.rows()],
    }


def pack_curve(base: str, reasoning: str, folder: Path, size, device: str, evaluate) -> dict:
    """Accuracy of base + the o_proj pack, exact and as PEFT LoRA at ``size.pack_ranks`` (``packs.rank_curve``,
    hot-swapped on one loaded base); ``evaluate(model, tokenizer)`` is Table 1's chat accuracy."""
    from sfn_merge_plugin.lab.measure import load_model
    from sfn_merge_plugin.packs.measure import rank_curve

    model, tok = load_model(base, device)
    rows = rank_curve(base, reasoning, lambda m: evaluate(m, tok), list(size.pack_ranks), modules="o_proj",
                      workdir=str(folder), model=model)
    return {"folder": str(folder), "modules": "o_proj", "rows": rows}
