"""The report's tables, built from results.json as numbers (``Table``): the CSVs hold the numbers, and
``display`` formats them for the report (a mean and its stderr column become one "0.160 ± 0.026" cell).

Every function takes the results document (``LabResults.to_json()``) and returns a ``Table`` or None when
its stage did not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfn_merge_plugin.lab import verdict as V

PAPER_TABLE3 = {  # the paper's Table 3 (Qwen2.5-32B, blocks 5-30, one conversation graded by hand)
    ("q_proj", "zero"): "I", ("k_proj", "zero"): "I", ("v_proj", "zero"): "III", ("o_proj", "zero"): "III",
    ("gate_proj", "zero"): "I", ("up_proj", "zero"): "I", ("down_proj", "zero"): "I",
    ("q_proj", "reinit"): "I", ("k_proj", "reinit"): "I", ("v_proj", "reinit"): "II", ("o_proj", "reinit"): "III",
    ("gate_proj", "reinit"): "I", ("up_proj", "reinit"): "I", ("down_proj", "reinit"): "I",
    ("-", "remove"): "I",
}
FREEZE_LABELS = {"emb_head": "Emb+Head (+norms)", "oproj": "Emb+Head+o_proj (+norms)",
                 "qkvo": "Emb+Head+{q,k,v,o} (+norms)", "all": "all (full fine-tuning)"}
CLAIM_TITLES = {"largest_mean_delta_norm": "o_proj has the largest mean ||B-A||, >= 2x the runner-up",
                "largest_mean_rel_delta": "o_proj has the largest mean ||B-A||/||A||, >= 2x the runner-up",
                "o_proj_bimodal": "only o_proj's relative change r is bimodal"}


@dataclass
class Table:
    """Columns and rows of plain values (numbers, strings, None); how the report shows them."""

    columns: list  # CSV header, one name per value
    rows: list  # lists of values, one per column
    pm: dict = field(default_factory=dict)  # mean column -> its stderr column (shown as "mean ± se")
    formats: dict = field(default_factory=dict)  # column -> format spec for the report ("{:.0%}")

    def column(self, name: str) -> list:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def fmt(value, spec: str | None = None) -> str:
    """One value as the report shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    if spec:
        return spec.format(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if value != 0 and abs(value) < 1e-2 else f"{value:.3f}"
    return str(value)


def display(table: Table) -> tuple:
    """(head, rows of strings) for the report: stderr columns folded into their means, empty columns left out."""
    hidden = set(table.pm.values())
    keep = [i for i, c in enumerate(table.columns) if c not in hidden
            and (not table.rows or any(r[i] is not None for r in table.rows))]  # an all-empty column is not shown
    head = [table.columns[i] for i in keep]
    rows = []
    for r in table.rows:
        cells = []
        for i in keep:
            name = table.columns[i]
            spec = table.formats.get(name)
            text = fmt(r[i], spec)
            se_col = table.pm.get(name)
            if se_col is not None and r[i] is not None:
                se = r[table.columns.index(se_col)]
                if se is not None:
                    text += " ± " + fmt(se, spec)
            cells.append(text)
        rows.append(cells)
    return head, rows


# --- pairs -------------------------------------------------------------------------------------------

def pairs_table(results: dict) -> Table:
    cols = ["pair", "seed", "trusted", "base: chat", "base: chat stderr", "base: plain text", "base: plain text stderr",
            "base: <think> forced", "base: <think> forced stderr", "reasoning: chat", "reasoning: chat stderr",
            "reasoning: mean tokens", "base: chat probes", "reasoning: chat probes", "base training steps",
            "base training seconds", "reasoning training steps", "reasoning training seconds"]
    rows = []
    for e in results["pairs"].values():
        p = e["pairs"]
        ev, tr = p["eval"], p.get("training") or {}

        def acc(role, fmt_):
            x = ev[role].get(fmt_)
            return (x["accuracy"], x["stderr"]) if x else (None, None)

        def steps(role):
            t = tr.get(role)
            return (sum(t["rounds"]) if t and t.get("rounds") else (t["recipe"]["steps"] if t else None),
                    t["seconds"] if t else None)

        rows.append([p["name"], p["seed"], p["trusted"], *acc("base", "chat"), *acc("base", "plain"),
                     *acc("base", "forced"), *acc("reasoning", "chat"), ev["reasoning"]["chat"]["mean_generated_tokens"],
                     ev["base"]["chat"].get("probes"), ev["reasoning"]["chat"].get("probes"), *steps("base"),
                     *steps("reasoning")])
    return Table(cols, rows, pm={"base: chat": "base: chat stderr", "base: plain text": "base: plain text stderr",
                                 "base: <think> forced": "base: <think> forced stderr",
                                 "reasoning: chat": "reasoning: chat stderr"},
                 formats={"reasoning: mean tokens": "{:.1f}", "base: chat probes": "{:.2f}",
                          "reasoning: chat probes": "{:.2f}", "base training seconds": "{:.0f}",
                          "reasoning training seconds": "{:.0f}"})


def loss_checks_table(results: dict) -> Table:
    """Each training stage's final loss per example kind against its threshold."""
    cols = ["pair", "stage", "example kind", "final loss", "threshold", "passed"]
    rows = []
    for pid, e in results["pairs"].items():
        tr = e["pairs"].get("training") or {}
        for role in ("base", "reasoning"):
            if role in tr:
                for kind, c in tr[role]["check"].items():
                    rows.append([pid, tr[role]["stage"], kind, c["loss"], c["max"], c["ok"]])
    return Table(cols, rows, formats={"threshold": "{:g}"})


# --- delta -------------------------------------------------------------------------------------------

def _delta_kinds(results: dict) -> list:
    from sfn_merge_plugin.taxonomy import KINDS

    return [k for k in KINDS if any(k in e.get("delta", {}).get("per_kind", {}) for e in results["pairs"].values())]


def regime_table(results: dict) -> Table | None:
    """One row per pair: regime, largest relative change, and the relative change of every kind (the CSV)."""
    kinds = _delta_kinds(results)
    rows = [[pid, e["delta"]["regime"], e["delta"]["max_linear_rel_delta"]]
            + [e["delta"]["per_kind"].get(k, {}).get("rel_delta") for k in kinds]
            for pid, e in results["pairs"].items() if e.get("delta")]
    if not rows:
        return None
    return Table(["pair", "regime", "max over linear kinds"] + kinds, rows)


def regime_summary(results: dict) -> Table | None:
    """The narrow part of ``regime_table`` for the report: pair, regime, largest change."""
    t = regime_table(results)
    return None if t is None else Table(t.columns[:3], [r[:3] for r in t.rows])


def per_kind_table(results: dict) -> Table | None:
    """``regime_table`` turned on its side (one row per module kind, one column per pair): it fits a page."""
    t = regime_table(results)
    if t is None:
        return None
    pids = [r[0] for r in t.rows]
    return Table(["module kind"] + pids, [[k] + [r[3 + i] for r in t.rows] for i, k in enumerate(t.columns[3:])])


def claims_table(results: dict) -> Table | None:
    """The paper's Delta claims as measured on every pair: the ranking and ratio, not only a verdict."""
    cols = ["pair", "claim", "largest", "its value", "runner-up", "runner-up value", "ratio", "o_proj rank",
            "holds"]
    rows = []
    for pid, e in results["pairs"].items():
        for key, c in (e.get("delta", {}).get("claims") or {}).items():
            title = CLAIM_TITLES.get(key, c.get("paper", key))
            if not c.get("measured"):
                rows.append([pid, title, None, None, None, None, None, None, None])
            elif key == "o_proj_bimodal":
                others = ", ".join(c.get("other_bimodal_kinds") or []) or "none"
                rows.append([pid, title, "o_proj bimodal" if c["bimodal"] else "o_proj not bimodal",
                             c.get("amplitude"), f"other bimodal: {others}", None, None, None, c["holds"]])
            else:
                ratio = c["ratio"] if c["ratio"] is not None else float("inf")
                rows.append([pid, title, c["kind"], c["value"], c["runner_up"], c["runner_up_value"], ratio,
                             c["o_proj_rank"], c["holds"]])
    if not rows:
        return None
    return Table(cols, rows, formats={"its value": "{:.4g}", "runner-up value": "{:.4g}", "ratio": "{:.2f}x"})


# --- merge -------------------------------------------------------------------------------------------

def merge_table(results: dict, name: str) -> Table | None:
    entries = V.groups(results)[name]
    if not all("merge" in e for e in entries):
        return None
    cols = ["model", "replaced module", "accuracy", "accuracy stderr", "mean generated tokens", "opens <think>",
            "chat probes", "recovered share of the gap", "accuracy, <think> forced", "accuracy, <think> forced stderr"]
    base = V.accuracy([e["pairs"]["eval"]["base"]["chat"] for e in entries])
    reason = V.accuracy([e["pairs"]["eval"]["reasoning"]["chat"] for e in entries])
    gap = (reason[0] - base[0]) if base[0] is not None else None

    def row(label, module, evals, forced):
        acc = V.accuracy(evals)
        toks = V.mean_se([x["mean_generated_tokens"] for x in evals])[0]
        think = V.mean_se([x["think_rate"] for x in evals])[0]
        probes = V.mean_se([x.get("probes") for x in evals])[0]
        recovered = (acc[0] - base[0]) / gap if gap and gap > 0 else None
        forced_acc = V.accuracy(forced) if all(forced) else (None, None)
        return [label, module, acc[0], acc[1], toks, think, probes, recovered, forced_acc[0], forced_acc[1]]

    rows = [row(role, "-", [e["pairs"]["eval"][role]["chat"] for e in entries],
                [e["pairs"]["eval"][role].get("forced") for e in entries]) for role in ("base", "reasoning")]
    for label in entries[0]["merge"]["rows"]:
        merged = [e["merge"]["rows"][label] for e in entries]
        rows.append(row("base + reasoning's", label, [m["eval"] for m in merged], [m.get("eval_forced") for m in merged]))
    return Table(cols, rows, pm={"accuracy": "accuracy stderr", "accuracy, <think> forced": "accuracy, <think> forced stderr"},
                 formats={"accuracy": "{:.3f}", "accuracy, <think> forced": "{:.3f}", "mean generated tokens": "{:.1f}",
                          "opens <think>": "{:.2f}", "chat probes": "{:.2f}", "recovered share of the gap": "{:.0%}"})


# --- freeze ------------------------------------------------------------------------------------------

def state_mb(run: dict) -> float:
    """Training state that scales with the model: fp32 weights of every parameter, plus gradient and two Adam
    moments of each trainable one (what freezing saves; activations come on top)."""
    return (4 * run["total_parameters"] + 12 * run["trainable_parameters"]) / 2**20


def freeze_table(results: dict, name: str) -> Table | None:
    entries = V.groups(results)[name]
    if not all("freeze" in e for e in entries):
        return None
    cols = ["trainable", "parameters", "parameter share", "accuracy", "accuracy stderr", "steps/s", "steps/s stderr",
            "peak memory (MB)", "peak memory (MB) stderr", "training state (MB)", "final loss", "final loss stderr",
            "runs", "frozen tensors moved"]
    rows = []
    for preset in entries[0]["freeze"]["rows"]:
        runs = [r for e in entries for r in e["freeze"]["rows"][preset]]
        per_pair = [e["freeze"]["rows"][preset] for e in entries]
        acc = V.nested_mean_se(per_pair, lambda r: r["eval"]["accuracy"])
        if acc[1] is None and len(runs) == 1:
            acc = (acc[0], runs[0]["eval"]["stderr"])
        sps = V.nested_mean_se(per_pair, lambda r: r["steps_per_s"])
        mem = V.nested_mean_se(per_pair, lambda r: r["peak_memory_mb"])
        loss = V.nested_mean_se(per_pair, lambda r: r["final_loss"])
        r0 = runs[0]
        moved = sum(len(r["moved"]["frozen_changed"]) for r in runs)
        rows.append([FREEZE_LABELS.get(preset, preset), r0["trainable_parameters"],
                     r0["trainable_parameters"] / r0["total_parameters"], *acc, *sps, *mem, state_mb(r0), *loss,
                     len(runs), moved])
    return Table(cols, rows, pm={"accuracy": "accuracy stderr", "steps/s": "steps/s stderr",
                                 "peak memory (MB)": "peak memory (MB) stderr", "final loss": "final loss stderr"},
                 formats={"parameter share": "{:.1%}", "accuracy": "{:.3f}", "steps/s": "{:.2f}",
                          "peak memory (MB)": "{:.1f}", "training state (MB)": "{:.1f}", "final loss": "{:.4f}"})


# --- destruction -------------------------------------------------------------------------------------

def destruction_table(results: dict, pid: str) -> Table | None:
    d = results["pairs"][pid].get("destruction")
    if not d:
        return None
    cols = ["module", "method", "layers", "conversation level", "reasoning correct", "reasoning graded",
            "level I", "level II", "level III", "level IV", "paper (Qwen2.5-32B)", "same logits as"]
    rows = [[r["module"], r["method"], r["layers"], r["conversation_level"], r["reasoning_correct"],
             r["reasoning_graded"], r["I"], r["II"], r["III"], r["IV"], PAPER_TABLE3.get((r["module"], r["method"])),
             r["same_logits_as"] or None] for r in d["table"]]
    return Table(cols, rows)


def grouped(tables: list) -> Table:
    """Several pairs' tables as one CSV: a leading ``pair`` column."""
    head, rows, pm, formats = None, [], {}, {}
    for name, table in tables:
        if table is None:
            continue
        head = ["pair"] + table.columns
        rows += [[name] + r for r in table.rows]
        pm, formats = table.pm, table.formats
    return Table(head or ["pair"], rows, pm, formats)
