"""A map's outputs, all from the MapResult's numbers: map.csv (numeric columns), map.json, the two heatmaps
(layers x module rows, share with its 95% interval in every cell) and summary.md, a ranked list that says
plainly when nothing stands out."""

from __future__ import annotations

import csv
import io
import math

CSV_COLUMNS = ("direction", "module", "layers", "accuracy", "ci_low", "ci_high", "share", "share_ci_low",
               "share_ci_high", "level", "problems", "samples", "tensors", "seconds")
TOP = 5


def _num(x):
    """A float for CSV/JSON; None (empty cell / null) for NaN."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def row_dict(r) -> dict:
    c = r.cell
    return {"direction": c.direction, "module": c.row, "layers": c.layers, "accuracy": _num(r.accuracy.value),
            "ci_low": _num(r.accuracy.low), "ci_high": _num(r.accuracy.high), "share": _num(r.share.value),
            "share_ci_low": _num(r.share.low), "share_ci_high": _num(r.share.high), "level": r.level or "",
            "problems": int(r.correct.shape[0]), "samples": int(r.correct.shape[1]), "tensors": len(c.names),
            "seconds": round(float(r.seconds), 3)}


def map_csv(result) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in result.rows():
        w.writerow({k: ("" if v is None else v) for k, v in row_dict(r).items()})
    return buf.getvalue()


def _est(e) -> dict:
    return {"value": _num(e.value), "ci_low": _num(e.low), "ci_high": _num(e.high)}


def map_json(result) -> dict:
    from dataclasses import asdict

    ends = {d: [dict(row_dict(r), examples=r.examples) for r in result.cells[d] if r.cell.row in ("none", "all")]
            for d in result.cells}
    return {
        "format": "sfn-localize/1",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(result.config).items()},
        "architecture": result.architecture, "num_layers": result.num_layers,
        "base_accuracy": _est(result.base), "tuned_accuracy": _est(result.tuned), "gap": _est(result.gap),
        "ends": ends, "cells": [dict(row_dict(r), chat_levels=r.levels, examples=r.examples) for r in result.rows()],
        "checks": result.checks, "consistency": result.consistency,
        "timing": {k: _num(v) if isinstance(v, float) else v for k, v in result.timing.items()},
        "summary": summary_lines(result),
    }


def _overlap(a, b) -> bool:
    return not (a.share.low > b.share.high or b.share.low > a.share.high)


def ranked(result, direction: str) -> list:
    rows = [r for r in result.rows() if r.cell.direction == direction and math.isfinite(r.share.value)]
    return sorted(rows, key=lambda r: -r.share.value)


def summary_lines(result) -> list:
    """Plain sentences: the gap, then per direction the top cells and whether they stand out."""
    g = result.gap
    lines = [f"base accuracy {result.base.value:.3f} [{result.base.low:.3f}, {result.base.high:.3f}], tuned "
             f"{result.tuned.value:.3f} [{result.tuned.low:.3f}, {result.tuned.high:.3f}]; gap {g.value:+.3f} "
             f"[{g.low:+.3f}, {g.high:+.3f}]"]
    if not (g.low > 0 or g.high < 0):
        lines.append("the gap's 95% interval includes 0: the tune is not measurably better than the base on these "
                     "problems, so no share below means anything; use more problems (--problems) or another task")
    verb = {"sufficiency": "recovers", "necessity": "destroys"}
    for d in result.config.directions:
        top = ranked(result, d)
        if not top:
            lines.append(f"{d}: no cell has a finite share")
            continue
        head = top[:TOP]
        lines.append(f"{d}: the {len(head)} cells that {verb[d][:-1]} most of the gap:")
        for i, r in enumerate(head, 1):
            lines.append(f"  {i}. {r.cell.row} @ layers {r.cell.layers}: share {r.share.value:.2f} "
                         f"[{r.share.low:.2f}, {r.share.high:.2f}], accuracy {r.accuracy.value:.3f}, chat level {r.level or '-'}")
        best = top[0]
        if len(top) > 1 and _overlap(best, top[1]):
            n = sum(_overlap(best, r) for r in top[1:])
            lines.append(f"  nothing stands out: the top cell's interval overlaps {n} other cell(s)' "
                         f"(e.g. {top[1].cell.row} @ {top[1].cell.layers})")
        elif best.share.low <= 0:
            lines.append("  nothing stands out: even the top cell's interval includes 0")
        else:
            lines.append(f"  {best.cell.row} @ layers {best.cell.layers} stands out: its interval is above every other cell's")
        broken = [r for r in top if r.level in ("I", "II")]
        if broken:
            lines.append(f"  chat falls apart (level I/II) in {len(broken)} cell(s), e.g. {broken[0].cell.row} @ {broken[0].cell.layers}")
    for name, ok in result.consistency.items():
        lines.append(f"consistency {name}: {'holds' if ok else 'FAILS'}")
    t = result.timing
    lines.append(f"{t['cells']} cells in {t['seconds']:.0f} s ({t['cells_per_minute']:.2f} cells/min); peak RSS "
                 f"{t['peak_rss_bytes'] / 2**20:.0f} MiB for a {t['model_bytes'] / 2**20:.1f} MiB model (python, torch and "
                 "transformers alone take a few hundred MiB)")
    return lines


def heatmap(result, direction: str, path) -> None:
    """Layers (columns) x module rows, colour = share of the gap, text = share and its 95% interval."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in result.rows() if r.cell.direction == direction]
    modules = list(dict.fromkeys(r.cell.row for r in rows))
    layers = list(dict.fromkeys(r.cell.layers for r in rows))
    grid = np.full((len(modules), len(layers)), np.nan)
    for r in rows:
        grid[modules.index(r.cell.row), layers.index(r.cell.layers)] = r.share.value if math.isfinite(r.share.value) else np.nan
    fig, ax = plt.subplots(figsize=(1.3 * len(layers) + 2.5, 0.62 * len(modules) + 1.8))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for r in rows:
        i, j = modules.index(r.cell.row), layers.index(r.cell.layers)
        if math.isfinite(r.share.value):
            text = f"{r.share.value:.2f}\n[{r.share.low:.2f},{r.share.high:.2f}]"
        else:
            text = f"no share\nacc {r.accuracy.value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=7,
                color="white" if math.isfinite(r.share.value) and abs(r.share.value) > 0.6 else "black")
    ax.set_xticks(range(len(layers)), [f"L{x}" for x in layers])
    ax.set_yticks(range(len(modules)), modules)
    ax.set_xlabel("layers")
    what = "recovered (base + these tensors of the tune)" if direction == "sufficiency" else \
        "destroyed (tune with these reverted to the base)"
    import os

    g = result.gap
    pair = f"{os.path.basename(os.path.normpath(result.config.base))} -> {os.path.basename(os.path.normpath(result.config.tuned))}"
    ax.set_title(f"{direction}: share of the gap {what}\n{pair}; gap {g.value:+.3f} [{g.low:+.3f}, {g.high:+.3f}]", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="share of gap [95% CI]")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result, out) -> None:
    """All outputs into ``out`` through a staged folder: complete or not there at all."""
    from sfn_merge_plugin.outputs import atomic_write, atomic_write_json, staged_folder

    with staged_folder(out, "localize", force=result.config.force) as tmp:
        atomic_write(tmp / "map.csv", map_csv(result))
        atomic_write_json(tmp / "map.json", map_json(result))
        atomic_write(tmp / "summary.md", "# sfn localize\n\n" + "\n".join(
            ln if ln.startswith("  ") else f"\n{ln}" for ln in summary_lines(result)).lstrip() + "\n")
        for d in result.config.directions:
            heatmap(result, d, tmp / f"{d}.png")
