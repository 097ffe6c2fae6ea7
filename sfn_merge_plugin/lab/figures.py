"""The report's figures, drawn from results.json's numbers (and the delta tool's histograms.json), never
from formatted table cells. Legends sit outside the axes, titles name the pair (not a cache folder).
Figures use matplotlib's object API (no pyplot state, no global backend change)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sfn_merge_plugin.lab import verdict as V
from sfn_merge_plugin.lab.config import SMALL_CHANGE
from sfn_merge_plugin.lab.tables import FREEZE_LABELS, regime_table

STAGE_ORDER = ("pretrain", "skill_pretrain", "skill_sft", "circuit_sft")


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _save(fig, path: Path) -> Path:
    from sfn_merge_plugin.outputs import staged_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _legend_outside(ax, fontsize: float = 7) -> None:
    """Legend to the right of the axes: it never covers a curve or a bar."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def draw_training(results: dict, path: Path) -> Path | None:
    """Loss per example kind along every training stage of every pair (log scale)."""
    stages = {}
    for e in results["pairs"].values():
        tr = e["pairs"].get("training") or {}
        for role in ("base", "reasoning"):
            if role in tr and tr[role].get("curves"):
                stages[(tr[role]["stage"], e["pairs"]["seed"])] = tr[role]
    if not stages:
        return None
    names = sorted({s for s, _ in stages}, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 9)
    fig = _figure(4.6 * len(names), 3.4)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, stage in zip(axes, names):
        for (s, seed), rec in sorted(stages.items(), key=lambda kv: str(kv[0][1])):
            if s != stage:
                continue
            for kind, curve in rec["curves"].items():
                xs = [i * rec["curve_stride"] for i in range(len(curve))]
                ax.plot(xs, [max(v, 1e-6) if v is not None else math.nan for v in curve], lw=1,
                        label=f"{kind} (seed {seed})")
            for c in rec["check"].values():
                ax.axhline(c["max"], color="gray", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6, loc="lower left", frameon=True, framealpha=0.8)  # losses fall: lower left is empty early
    axes[0].set_ylabel("training loss (completion tokens)")
    return _save(fig, path)


def draw_regime(results: dict, path: Path) -> Path | None:
    """Relative change per module kind, one bar group per kind, one bar per pair."""
    table = regime_table(results)
    if table is None:
        return None
    kinds = table.columns[3:]
    fig = _figure(8.5, 3.4)
    ax = fig.subplots()
    width = 0.8 / len(table.rows)
    for i, row in enumerate(table.rows):
        vals = [math.nan if v is None else v for v in row[3:]]
        ax.bar([k + i * width for k in range(len(kinds))], vals, width, label=f"{row[0]} ({row[1]})")
    ax.axhline(SMALL_CHANGE, color="gray", ls=":", lw=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], kinds, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("||B - A|| / ||A||")
    ax.set_title(f"relative change per module kind (dotted: {SMALL_CHANGE:g}, the small-change limit)", fontsize=9)
    _legend_outside(ax)
    return _save(fig, path)


def draw_merge(results: dict, path: Path) -> Path | None:
    groups = {n: es for n, es in V.groups(results).items() if all("merge" in e for e in es)}
    if not groups:
        return None
    fig = _figure(4.6 * len(groups), 3.4)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, entries) in zip(axes, groups.items()):
        rows = list(entries[0]["merge"]["rows"])
        labels = ["base", "reasoning"] + [f"+{k}" for k in rows]
        evals = [[e["pairs"]["eval"]["base"]["chat"] for e in entries],
                 [e["pairs"]["eval"]["reasoning"]["chat"] for e in entries]]
        evals += [[e["merge"]["rows"][k]["eval"] for e in entries] for k in rows]
        stats = [V.accuracy(ev) for ev in evals]
        ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[se or 0 for _, se in stats], capsize=3,
               color=["#888", "#444"] + ["#4a7ebb"] * (len(labels) - 2))
        ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}: Table 1 (held-out accuracy)", fontsize=9)
    axes[0].set_ylabel("accuracy")
    return _save(fig, path)


def draw_freeze(results: dict, name: str, path: Path) -> Path | None:
    """The paper's Fig. 6: training loss of each Freeze row (every seed)."""
    entries = V.groups(results)[name]
    if not all("freeze" in e for e in entries):
        return None
    fig = _figure(7.0, 3.4)
    ax = fig.subplots()
    colors = dict(zip(entries[0]["freeze"]["rows"], ["#d62728", "#1f77b4", "#2ca02c", "#333333"]))
    for preset in entries[0]["freeze"]["rows"]:
        for i, run in enumerate(r for e in entries for r in e["freeze"]["rows"][preset]):
            ax.plot(range(1, len(run["curve"]) + 1), [max(v, 1e-6) for v in run["curve"]], color=colors.get(preset),
                    lw=1, alpha=0.8, label=FREEZE_LABELS.get(preset, preset) if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{name}: Freeze from the base (Fig. 6)", fontsize=9)
    _legend_outside(ax)
    return _save(fig, path)


def draw_delta_hist(pid: str, delta_folder: str, path: Path) -> Path | None:
    """Fig. 3 for one pair, readable: the histogram of r over all layers per linear kind, with the mass
    beyond the range and the bimodality numbers written under each panel at a readable size."""
    import numpy as np

    from sfn_merge_plugin.delta.plots import aggregate_histograms
    from sfn_merge_plugin.delta.stats import HistSpec, bimodality
    from sfn_merge_plugin.delta.summary import LINEAR_KINDS

    hist_file = Path(delta_folder) / "histograms.json"
    if not hist_file.is_file():
        return None
    doc = json.loads(hist_file.read_text())
    spec = HistSpec(**doc["histogram"])
    units = doc["pairs"][0]["units"]
    kinds = [k for k in LINEAR_KINDS if any(u["module"] == k and u["layer"] is not None for u in units)]
    if not kinds:
        return None
    agg = aggregate_histograms(units, kinds, set())
    fig = _figure(2.1 * len(kinds), 2.9)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    edges = spec.edges()
    for ax, kind in zip(axes, kinds):
        counts, below, above = agg[("all", kind)]
        total = max(int(counts.sum() + below + above), 1)
        ax.stairs(counts / total, edges, fill=True, color="#d62728" if kind == "o_proj" else "#4a7ebb", alpha=0.85)
        b = bimodality(np.concatenate([[below], counts, [above]]), spec)
        ax.set_title(kind, fontsize=9)
        ax.set_xlim(-spec.range, spec.range)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"beyond ±{spec.range:g}: {100 * (below + above) / total:.1f}%\n"
                      f"A={b['amplitude']:.2f}, {'bimodal' if b['bimodal'] else 'not bimodal'}", fontsize=8)
    axes[0].set_ylabel("share of elements", fontsize=8)
    fig.suptitle(f"{pid}: relative change r = (b - a) / |a| per element, all layers", fontsize=10)
    return _save(fig, path)
