"""The Delta Stethoscope's files (delta.csv, histograms.json, summary.json) and its console table.

Every file is written under a temporary name and renamed into place, so an interrupted run leaves
the previous files (or none), never half-written ones. The figures are drawn from these files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

CSV_NAME, SUMMARY_NAME, HIST_NAME = "delta.csv", "summary.json", "histograms.json"
KEY_COLUMNS = ("tensor", "layer", "module", "block")
PAIR_COLUMNS = ("numel", "norm_base", "norm_tuned", "norm_delta", "rel_delta", "cosine", "max_abs_delta",
                "frac_changed", "r_below", "r_above", "nonfinite", "note")
SUMMARY_FORMAT, HIST_FORMAT = "sfn-delta-summary/1", "sfn-delta-histograms/1"


def pair_column(name: str, label: str, several: bool) -> str:
    """``norm_delta`` for a single pair; ``norm_delta:<label>`` when one call compares several fine-tunes."""
    return f"{name}:{label}" if several else name


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_text(pairs: list) -> str:
    """delta.csv: one row per tensor (per block of a fused tensor); one column set per pair.

    ``pairs``: [(label, plan, stats)]. Rows follow the base's tensor order (model-level first)."""
    several = len(pairs) > 1
    rows, order = {}, []
    for label, plan, stats in pairs:
        for unit, s in zip(plan.units, stats):
            key = (unit.tensor, unit.module)
            if key not in rows:
                rows[key] = {"tensor": unit.tensor, "layer": "" if unit.layer is None else unit.layer,
                             "module": unit.module, "block": unit.block_text}
                order.append(key)
            values = dict(s.row(), note=unit.note)
            for col in PAIR_COLUMNS:
                rows[key][pair_column(col, label, several)] = values[col]
    header = list(KEY_COLUMNS) + [pair_column(c, label, several) for label, _, _ in pairs for c in PAIR_COLUMNS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for key in order:
        w.writerow([_cell(rows[key].get(c)) for c in header])
    return buf.getvalue()


def histograms_doc(pairs: list, spec) -> dict:
    """histograms.json: the exact counts of r per unit (regular bins, and the mass beyond each end)."""
    return {
        "format": HIST_FORMAT,
        "histogram": spec.to_dict(),
        "pairs": [{
            "label": label,
            "units": [{"tensor": u.tensor, "layer": u.layer, "module": u.module, "block": u.block_text,
                       "below": s.below, "above": s.above, "nonfinite": s.nonfinite,
                       "counts": [int(c) for c in s.hist]}
                      for u, s in zip(plan.units, stats)],
        } for label, plan, stats in pairs],
    }


def _json_text(doc, compact: bool = False) -> str:
    if compact:  # histograms.json: ~200 counts per tensor, unreadable one per line anyway
        return json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def write_files(out_dir: str, files: dict) -> list:
    """Write {name: text} into ``out_dir`` atomically: every file to a temporary name first, then all renamed
    (a failure, disk full included, leaves the earlier files and no temporary one)."""
    import contextlib

    from sfn_merge_plugin.outputs import staged_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(staged_file(out / name)), text) for name, text in files.items()]
        for tmp, text in staged:
            tmp.write_text(text, encoding="utf-8")
    return [str(out / name) for name in files]


def write_outputs(out_dir: str, summary: dict, pairs: list, spec) -> list:
    return write_files(out_dir, {
        CSV_NAME: csv_text(pairs),
        HIST_NAME: _json_text(histograms_doc(pairs, spec), compact=True),
        SUMMARY_NAME: _json_text(summary),
    })


def read_outputs(out_dir: str) -> tuple:
    """(summary, histograms) of a delta/ folder, with a clear error when it is not one."""
    from sfn_merge_plugin.delta.pairing import DeltaError

    out = Path(out_dir)
    docs = []
    for name, fmt in ((SUMMARY_NAME, SUMMARY_FORMAT), (HIST_NAME, HIST_FORMAT)):
        path = out / name
        if not path.is_file():
            raise DeltaError(f"{out_dir}: no {name} here; give the folder `sfn delta ... -o DIR` wrote")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DeltaError(f"{path}: cannot be read as JSON ({exc}); re-run `sfn delta`") from None
        if not isinstance(doc, dict) or doc.get("format") != fmt:
            raise DeltaError(f"{path}: not an SfN delta file (expected format {fmt!r}); re-run `sfn delta`")
        docs.append(doc)
    return docs[0], docs[1]


# -- console ---------------------------------------------------------------------------------------
def _num(x, fmt="{:.3e}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _bim(b) -> str:
    if not b:
        return "-"
    return f"{'YES' if b['bimodal'] else 'no'} (A={b['amplitude']:.2f}, z={b['z']:.1f})"


def console_table(summary: dict) -> str:
    """What ``sfn delta`` prints: per module kind, the claims, and the notes."""
    spec = summary["histogram"]
    lines = [f"base: {summary['base']}  ({summary['architecture']}, {summary['num_layers']} layers)"]
    for pair in summary["pairs"]:
        t = pair.get("timing", {})
        lines.append("")
        lines.append(f"fine-tune [{pair['label']}]: {pair['tuned']}")
        lines.append(f"  {pair['units']} tensors/blocks, {t.get('bytes_read', 0) / 1e9:.2f} GB read in "
                     f"{t.get('seconds', 0):.1f} s ({t.get('threads', '?')} threads)")
        R = spec["range"]
        head = (f"  {'module':<26}{'tensors':>7}  {'mean|B-A|':>10}  {'mean rel':>9}  {'cosine':>10}  {'changed':>8}"
                f"  {'r<-' + format(R, 'g'):>7}  {'r>=' + format(R, 'g'):>7}  bimodal r (unclipped)")
        lines.append(head)
        for kind, e in pair["per_kind"].items():
            mean_norm = e.get("mean_layer_norm_delta", e["norm_delta"])
            mean_rel = e.get("mean_layer_rel_delta", e["rel_delta"])
            lines.append(f"  {kind:<26}{e['tensors']:>7}  {_num(mean_norm):>10}  {_num(mean_rel, '{:.2e}'):>9}  "
                         f"{_num(e['cosine'], '{:.7f}'):>10}  {_pct(e['frac_changed']):>8}  {_pct(e['r_below']):>7}  "
                         f"{_pct(e['r_above']):>7}  {_bim(e.get('bimodality'))}")
        lines.extend("  " + line for line in claim_lines(pair["claims"]))
        for title, items in (("notes", pair["notes"]), ("config differences", pair["config_differences"])):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    - {n}" for n in items)
    return "\n".join(lines)


def claim_lines(claims: dict) -> list:
    out = ["claims (linear modules; mean over layers):"]
    for key, title in (("largest_mean_delta_norm", "largest mean ||B-A||"),
                       ("largest_mean_rel_delta", "largest mean ||B-A||/||A||")):
        c = claims[key]
        if not c.get("measured"):
            out.append(f"  {title}: not measured ({c['reason']})")
            continue
        verdict = "HOLDS" if c["holds"] else "does not hold"
        if c["ratio"] is None:  # the runner-up did not move at all: no ratio to print
            versus = f"no other linear module moved (runner-up {c['runner_up']} {c['runner_up_value']:.4g})"
        else:
            versus = f"{c['ratio']:.2f}x the runner-up {c['runner_up']} ({c['runner_up_value']:.4g})"
        out.append(f"  {title}: {c['kind']} ({c['value']:.4g}), {versus}; o_proj ranks {c['o_proj_rank']} "
                   f"-> o_proj first and >= 2x: {verdict}")
    c = claims["o_proj_bimodal"]
    if not c.get("measured"):
        out.append(f"  o_proj bimodal: not measured ({c['reason']})")
        return out
    out.append(f"  o_proj r bimodal (unclipped): {'YES' if c['bimodal'] else 'no'} (A={c['amplitude']:.2f}, "
               f"z={c['z']:.1f}; {c['layers_bimodal']}/{c['layers']} layers); other bimodal linear modules: "
               f"{', '.join(c['other_bimodal_kinds']) or 'none'} -> only o_proj bimodal: "
               f"{'HOLDS' if c['holds'] else 'does not hold'}")
    if c["clamp_artefact"]:
        out.append(f"  with the paper's clamp to the range o_proj WOULD look bimodal (A={c['amplitude_if_clamped']:.2f}): "
                   f"its edge bins would hold the {_pct(c['r_below'])} + {_pct(c['r_above'])} of r beyond the range")
    return out
