"""The Delta Stethoscope's figures, drawn only from summary.json and histograms.json (Agg, no display).

delta_norms.png    Fig. 2 style: per-layer ||B - A|| of each linear module (absolute and relative panels).
relative_hist.png  Fig. 3 style: the histogram of r per linear module, all layers and every k-th layer,
                   with the mass beyond the range written on each panel (it is not in the edge bins).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from sfn_merge_plugin.delta.summary import LINEAR_KINDS

_COLORS = {"q_proj": "#1f77b4", "k_proj": "#ff7f0e", "v_proj": "#2ca02c", "o_proj": "#d62728",
           "gate_proj": "#9467bd", "up_proj": "#8c564b", "down_proj": "#e377c2"}


def _figure(w, h, layout="constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout=layout)


def _save(fig, path: Path) -> str:
    tmp = path.with_name(f"{path.name}.sfn-tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "pair"


def plot_delta_norms(summary: dict, path: Path) -> str:
    from matplotlib.ticker import MaxNLocator

    pairs = summary["pairs"]
    fig = _figure(11, 3.6 * len(pairs))
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, pair in zip(axes, pairs):
        layers = sorted(int(l) for l in pair["per_layer"])
        kinds = [k for k in LINEAR_KINDS if any(k in pair["per_layer"][str(l)] for l in layers)]
        for ax, key, ylabel in ((row[0], "norm_delta", "||B - A||  (Frobenius)"),
                                (row[1], "rel_delta", "||B - A|| / ||A||")):
            for kind in kinds:
                xs = [l for l in layers if kind in pair["per_layer"][str(l)]]
                ys = [pair["per_layer"][str(l)][kind][key] for l in xs]
                ys = [np.nan if y is None else y for y in ys]
                ax.plot(xs, ys, marker="o", ms=3, lw=2.2 if kind == "o_proj" else 1.3,
                        color=_COLORS.get(kind), label=kind, zorder=3 if kind == "o_proj" else 2)
            ax.set_xlabel("layer")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        row[0].set_title(f"{pair['label']}: absolute change per layer", fontsize=10)
        row[1].set_title(f"{pair['label']}: relative change per layer", fontsize=10)
        # outside the axes, right of the relative-change panel: a legend inside covers the lines it names
        row[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Delta Stethoscope: {Path(summary['base']).name} -> fine-tune(s)", fontsize=11)
    return _save(fig, path)


def aggregate_histograms(units: list, kinds, layers=None) -> dict:
    """{(layer or "all", kind): (counts, below, above)} summed over the units of each module."""
    out = {}
    for u in units:
        if u["module"] not in kinds or u["layer"] is None:
            continue
        for key in ((u["layer"], u["module"]), ("all", u["module"])):
            if layers is not None and key[0] != "all" and key[0] not in layers:
                continue
            c, lo, hi = out.get(key, (0, 0, 0))
            out[key] = (np.asarray(u["counts"], dtype=np.int64) + c, lo + u["below"], hi + u["above"])
    return out


def default_every(num_layers: int) -> int:
    """About six layer rows, as in the paper (every 5th of 28 layers)."""
    return max(1, round(num_layers / 6))


def plot_relative_hist(pair_hist: dict, spec_dict: dict, num_layers: int, path: Path, every: Optional[int] = None,
                       title: str = "") -> str:
    from sfn_merge_plugin.delta.stats import HistSpec, bimodality

    spec = HistSpec(**spec_dict)
    every = every or default_every(num_layers)
    units = pair_hist["units"]
    kinds = [k for k in LINEAR_KINDS if any(u["module"] == k and u["layer"] is not None for u in units)]
    if not kinds:
        kinds = sorted({u["module"] for u in units if u["layer"] is not None})
    rows = ["all"] + list(range(0, num_layers, every))
    agg = aggregate_histograms(units, kinds, set(rows))
    rows = [r for r in rows if any((r, k) in agg for k in kinds)]
    from matplotlib.ticker import MaxNLocator

    nrows, ncols = max(1, len(rows)), max(1, len(kinds))
    width, height = 0.7 + 2.0 * ncols, 1.0 + 1.45 * nrows
    fig = _figure(width, height, layout=None)  # fixed margins: constrained layout costs seconds on big grids
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.6 / height, top=1 - 0.8 / height,
                        wspace=0.25, hspace=0.12)
    axes = fig.subplots(nrows, ncols, squeeze=False)  # no sharex: its grouping is quadratic in the axes
    edges = spec.edges()
    for i, r in enumerate(rows):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            if (r, kind) not in agg:
                ax.set_axis_off()
                continue
            counts, below, above = agg[(r, kind)]
            total = counts.sum() + below + above
            frac = counts / max(total, 1)
            ax.stairs(frac, edges, fill=True, color=_COLORS.get(kind, "#555555"), alpha=0.85)
            b = bimodality(np.concatenate([[below], counts, [above]]), spec)
            ax.text(0.02, 0.97, f"<-{spec.range:g}: {100 * below / max(total, 1):.1f}%\n"
                                f">={spec.range:g}: {100 * above / max(total, 1):.1f}%",
                    transform=ax.transAxes, va="top", ha="left", fontsize=6.5)
            ax.text(0.98, 0.97, f"A={b['amplitude']:.2f} z={b['z']:.0f}" + ("\nbimodal" if b["bimodal"] else ""),
                    transform=ax.transAxes, va="top", ha="right", fontsize=6.5,
                    color="#b00000" if b["bimodal"] else "#333333")
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.set_xlim(-spec.range, spec.range)
            ax.set_xticks([-spec.range, -spec.range / 2, 0, spec.range / 2, spec.range])
            ax.yaxis.set_major_locator(MaxNLocator(3))
            if i < nrows - 1:
                ax.tick_params(labelbottom=False)
            if i == 0:
                ax.set_title(kind, fontsize=9)
            if j == 0:
                ax.set_ylabel("all layers" if r == "all" else f"layer {r}", fontsize=8)
    fig.supxlabel(f"r = (b - a) / (|a| + {spec.eps:g}); y: fraction of all elements per bin; "
                  f"mass beyond +-{spec.range:g} in the corner, NOT in the edge bins", fontsize=8)
    fig.suptitle(title or "relative change per element", fontsize=10, y=1 - 0.2 / height)
    return _save(fig, path)


def draw_all(out_dir: str, every: Optional[int] = None) -> list:
    """(Re)draw every figure of a delta/ folder from its summary.json and histograms.json."""
    from sfn_merge_plugin.delta.report import read_outputs

    summary, hist = read_outputs(out_dir)
    out = Path(out_dir)
    written = [plot_delta_norms(summary, out / "delta_norms.png")]
    several = len(hist["pairs"]) > 1
    for pair in hist["pairs"]:
        name = f"relative_hist_{slug(pair['label'])}.png" if several else "relative_hist.png"
        title = f"{Path(summary['base']).name} -> {pair['label']}: relative change r per element"
        written.append(plot_relative_hist(pair, hist["histogram"], summary["num_layers"], out / name, every, title))
    return written
