"""Accuracy against pack size for the lab: one base loaded once, the exact pack and LoRA packs of several
ranks attached and evaluated in turn (``PackSet``), without writing a merged model.

    rows = rank_curve(base, tuned, task_eval_fn, ranks=(1, 4, 16), modules="o_proj")
    # [{"pack": "base", ...}, {"pack": "exact", ...}, {"pack": "lora", "rank": 1, ...}, ...]

``task_eval_fn(model) -> float`` is the lab's accuracy on its held-out problems. ``kept_energy`` of a LoRA
pack is over all its modules: sum of kept ||delta||^2 over sum of ||delta||^2 (1.0 for the exact pack).
"""

from __future__ import annotations

import os
import tempfile


def rank_curve(base: str, tuned: str, task_eval_fn, ranks, modules: str = "o_proj", layers: str = "all",
               workdir: str | None = None, model=None) -> list:
    """Rows ``{pack, rank, size_bytes, kept_energy, accuracy}``: the base, the exact pack, then each rank."""
    from sfn_merge_plugin.lab.measure import load_model  # the loader of the lab's own evaluations
    from sfn_merge_plugin.packs.extract import extract_exact
    from sfn_merge_plugin.packs.hotswap import PackSet
    from sfn_merge_plugin.packs.lora import extract_lora

    if model is None:
        model, _ = load_model(base)
    root = workdir or tempfile.mkdtemp(prefix="sfn-rank-curve-")
    packs = PackSet(model)
    rows = [{"pack": "base", "rank": None, "size_bytes": 0, "kept_energy": 0.0, "accuracy": float(task_eval_fn(model))}]
    exact = os.path.join(root, "exact")
    extract_exact(base, tuned, exact, modules, layers, force=True, progress=False)
    packs.attach("exact", exact)
    with packs.active("exact"):
        rows.append({"pack": "exact", "rank": None, "size_bytes": _weights_bytes(exact, "model.safetensors"),
                     "kept_energy": 1.0, "accuracy": float(task_eval_fn(model))})
    packs.detach("exact")
    for r in ranks:
        folder = os.path.join(root, f"lora-r{r}")
        reports = extract_lora(base, tuned, folder, modules, layers, rank=int(r), force=True, progress=False)
        packs.attach(f"r{r}", folder)
        with packs.active(f"r{r}"):
            acc = float(task_eval_fn(model))
        packs.detach(f"r{r}")
        rows.append({"pack": "lora", "rank": int(r), "size_bytes": _weights_bytes(folder, "adapter_model.safetensors"),
                     "kept_energy": total_kept_energy(reports), "accuracy": acc})
    return rows


def total_kept_energy(reports) -> float:
    """Kept share of the summed squared Frobenius norm over every low-rank module of a LoRA pack."""
    low = [r for r in reports if r.rank is not None]
    total = sum(r.delta_norm ** 2 for r in low)
    return 1.0 if total == 0 else sum(r.kept_energy * r.delta_norm ** 2 for r in low) / total


def _weights_bytes(folder: str, name: str) -> int:
    return os.path.getsize(os.path.join(folder, name))
