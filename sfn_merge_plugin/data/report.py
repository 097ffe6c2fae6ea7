"""The decontamination report: a JSON document and the console table made from it.

Per benchmark: its items, how many training rows were removed, and why (exact text or shared n-grams).
Per removed row: its number in the training file and the id of the item it matched, with the share of the
item's n-grams it holds. No text of either side appears, so a report can be published (GPQA's terms).
"""

from __future__ import annotations

import time

RULE = ("a row is removed when its normalised question equals a benchmark item's ('exact'), or holds "
        "{need} of the item's distinct word {n}-grams ('ngram'); items under {n} words match by exact text only")


def summary(deco) -> dict:
    """Counts, settings and removed rows of a finished ``Decontaminator`` run."""
    cfg, index = deco.config, deco.index
    per = {b.name: {"items": len(b.items), "items_under_n_words": index.short[b.name], "source": b.source,
                    "rows_removed": 0, "exact": 0, "ngram": 0} for b in deco.benchmarks}
    for removed in deco.removed:
        for m in removed["matches"]:
            per[m["benchmark"]]["rows_removed"] += 1
            per[m["benchmark"]][m["reason"]] += 1
    seconds = time.perf_counter() - deco.started
    need = "at least one" if cfg.threshold is None else f"at least {cfg.threshold:g}"
    return {
        "ngram": cfg.n,
        "threshold": cfg.threshold,
        "question_column": cfg.column or "auto",
        "rule": RULE.format(need=need, n=cfg.n),
        "rows_in": deco.rows_in,
        "rows_kept": deco.rows_in - len(deco.removed),
        "rows_removed": len(deco.removed),
        "benchmarks": per,
        "row_numbers": deco.numbering,
        "removed": deco.removed,
        "seconds": round(seconds, 3),
    }


def table(doc: dict) -> str:
    """A fixed-width table of ``summary`` output, for the console."""
    rows = [("benchmark", "items", "rows removed", "exact", "n-gram")]
    for name, b in doc["benchmarks"].items():
        rows.append((name, str(b["items"]), str(b["rows_removed"]), str(b["exact"]), str(b["ngram"])))
    rows.append(("any (distinct rows)", "", str(doc["rows_removed"]), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\nkept {doc['rows_kept']} of {doc['rows_in']} rows ({doc['ngram']}-grams, " \
        f"threshold {doc['threshold'] if doc['threshold'] is not None else 'any shared n-gram'})"
