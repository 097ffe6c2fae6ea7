"""The lab's report: CSV tables (``lab.tables``) and PNG figures (``lab.figures``) drawn from results.json,
then report.md and a self-contained report.html rendered (``lab.render``) from one list of blocks
(``lab.prose``).

    from sfn_merge_plugin.lab.report import write_report
    write_report("lab/")          # (re)draws everything from lab/results.json
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sfn_merge_plugin.lab import figures as F
from sfn_merge_plugin.lab import tables as T
from sfn_merge_plugin.lab import verdict as V
from sfn_merge_plugin.lab.prose import build, verdict_lines  # noqa: F401  (public names)
from sfn_merge_plugin.lab.render import to_html, to_markdown  # noqa: F401  (public names)
from sfn_merge_plugin.lab.results import LabResults
from sfn_merge_plugin.outputs import atomic_write

TABLE_FILES = ("pairs.csv", "loss_checks.csv", "regime.csv", "delta_claims.csv", "table1_merge.csv",
               "table2_freeze.csv", "table3_destruction.csv")


def merge_table(results: dict, name: str):
    """Table 1 of one pair as the report shows it: (head, rows of strings)."""
    table = T.merge_table(results, name)
    return None if table is None else T.display(table)


def freeze_table(results: dict, name: str):
    table = T.freeze_table(results, name)
    return None if table is None else T.display(table)


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def write_csv(path: Path, table: T.Table) -> None:
    """The table's numbers (a None is an empty cell; booleans are True/False)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.columns)
    w.writerows([[_csv_value(v) for v in r] for r in table.rows])
    atomic_write(path, buf.getvalue())


def write_report(lab_dir) -> dict:
    """Tables (CSV), figures (PNG), report.md and report.html of a lab folder, from its results.json."""
    root = Path(lab_dir)
    results = LabResults.read(root).to_json()
    groups = V.groups(results)
    write_csv(root / "pairs.csv", T.pairs_table(results))
    write_csv(root / "loss_checks.csv", T.loss_checks_table(results))
    write_csv(root / "regime.csv", T.regime_table(results) or T.Table(["pair"], []))
    write_csv(root / "delta_claims.csv", T.claims_table(results) or T.Table(["pair"], []))
    write_csv(root / "table1_merge.csv", T.grouped([(n, T.merge_table(results, n)) for n in groups]))
    write_csv(root / "table2_freeze.csv", T.grouped([(n, T.freeze_table(results, n)) for n in groups]))
    write_csv(root / "table3_destruction.csv",
              T.grouped([(pid, T.destruction_table(results, pid)) for pid in results["pairs"]]))
    fig_dir = root / "figures"
    figures = {"training": F.draw_training(results, fig_dir / "training.png"),
               "regime": F.draw_regime(results, fig_dir / "delta_regime.png"),
               "merge": F.draw_merge(results, fig_dir / "table1_merge.png")}
    for name, entries in groups.items():
        figures[f"freeze_{name}"] = F.draw_freeze(results, name, fig_dir / f"fig6_freeze_{name}.png")
        first = entries[0]
        pid = next(k for k, e in results["pairs"].items() if e is first)
        d = first.get("delta")
        if d and d.get("folder"):
            figures[f"delta_norms_{pid}"] = _delta_norms(pid, d["folder"], fig_dir / f"delta_norms_{pid}.png")
            figures[f"delta_hist_{pid}"] = F.draw_delta_hist(pid, d["folder"], fig_dir / f"delta_hist_{pid}.png")
    figures = {k: str(v) for k, v in figures.items() if v}
    blocks = build(results, root, figures)
    atomic_write(root / "report.md", to_markdown(blocks, root))
    atomic_write(root / "report.html", to_html(blocks, root))
    verdicts = {name: V.pair_verdict(entries) for name, entries in groups.items()}
    for name, entries in groups.items():
        verdicts[name]["stages"] = V.stages_note(entries)
    atomic_write(root / "verdict.json", json.dumps(verdicts, indent=1) + "\n")
    return verdicts


def _delta_norms(pid: str, folder: str, path: Path):
    """The delta tool's per-layer figure, titled with the pair's name instead of the base's cache folder."""
    from sfn_merge_plugin.delta.plots import plot_delta_norms
    from sfn_merge_plugin.delta.report import read_outputs

    try:
        summary, _ = read_outputs(folder)
    except Exception:  # noqa: BLE001 - a delta folder from an older version: the figure is skipped
        return None
    named = dict(summary, base=f"{pid} base", pairs=[dict(p, label=f"{pid} reasoning") for p in summary["pairs"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_delta_norms(named, path)
