"""The lab's conclusions, computed from results.json by fixed rules (stated in the report).

Gap: reasoning-model accuracy minus base accuracy (chat format, held-out problems). A swap "recovers"
(swap - base) / gap of it. Merge supports "o_proj localizes reasoning" when the o_proj swap recovers at
least half of the gap and no other swap recovers more; Freeze supports it when the Emb+Head+o_proj row
reaches at least 80% of full fine-tuning's gain while Emb+Head alone stays below half of it. A pair
that failed its training loss check, or shows a gap below 0.3, is inconclusive.
"""

from __future__ import annotations

import math

RULES = " ".join(__doc__.split("\n\n", 1)[1].split())
MIN_GAP = 0.3
SWAP_RECOVERS = 0.5
FREEZE_REACHES = 0.8
HEAD_ALONE_MAX = 0.5


def mean_se(values: list) -> tuple:
    """(mean, standard error over the values); se is None for a single value."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var / len(vals))


def nested_mean_se(groups_of_runs: list, value) -> tuple:
    """Mean ± stderr of ``value(run)`` when runs come in groups (Freeze seeds within pair seeds): over the
    group means when there are several groups (runs of one pair are not independent), else over the runs."""
    if len(groups_of_runs) > 1:
        return mean_se([mean_se([value(r) for r in runs])[0] for runs in groups_of_runs])
    return mean_se([value(r) for runs in groups_of_runs for r in runs])


def accuracy(evals: list) -> tuple:
    """(mean accuracy, its stderr): over seeds when there are several, else the binomial one."""
    m, se = mean_se([e["accuracy"] for e in evals])
    if se is None and len(evals) == 1:
        se = evals[0]["stderr"]
    return m, se


def groups(results: dict) -> dict:
    """{pair name: [pair-seed entries]} in results order."""
    out = {}
    for entry in results["pairs"].values():
        out.setdefault(entry["pairs"]["name"], []).append(entry)
    return out


def pair_verdict(entries: list) -> dict:
    """Every number the verdict uses for one pair (all of its seeds), and the verdict."""
    base = accuracy([e["pairs"]["eval"]["base"]["chat"] for e in entries])[0]
    reason = accuracy([e["pairs"]["eval"]["reasoning"]["chat"] for e in entries])[0]
    gap = reason - base
    v = {"base": base, "reasoning": reason, "gap": gap, "trusted": all(e["pairs"]["trusted"] for e in entries),
         "regime": sorted({e["delta"]["regime"] for e in entries if "delta" in e}) or None,
         "max_rel_delta": _max([e["delta"]["max_linear_rel_delta"] for e in entries if "delta" in e])}
    if all("merge" in e for e in entries):
        labels = list(entries[0]["merge"]["rows"])
        v["swaps"] = {lbl: accuracy([e["merge"]["rows"][lbl]["eval"] for e in entries])[0] for lbl in labels}
        v["recovered"] = {lbl: (a - base) / gap if gap > 0 else None for lbl, a in v["swaps"].items()}
    if all("freeze" in e for e in entries):
        rows = list(entries[0]["freeze"]["rows"])
        acc = {r: nested_mean_se([e["freeze"]["rows"][r] for e in entries], lambda run: run["eval"]["accuracy"])[0]
               for r in rows}
        v["freeze"] = acc
        full_gain = acc.get("all", 0) - base if "all" in acc else None
        v["freeze_full_gain"] = full_gain
        v["freeze_reached"] = ({r: (a - base) / full_gain for r, a in acc.items()}
                               if full_gain is not None and full_gain >= MIN_GAP else None)
    v.update(_decide(v))
    return v


def _max(values):
    vals = [x for x in values if x is not None]
    return max(vals) if vals else None


def _decide(v: dict) -> dict:
    why = []
    if not v["trusted"]:
        return {"answer": "inconclusive", "merge_supports": None, "freeze_supports": None,
                "why": ["the pair failed its training loss check, so its models do not show the intended behaviour"]}
    if v["gap"] < MIN_GAP:
        return {"answer": "inconclusive", "merge_supports": None, "freeze_supports": None,
                "why": [f"the reasoning model beats the base by only {v['gap']:.2f} (< {MIN_GAP}): nothing to localize"]}
    merge = None
    rec = v.get("recovered")
    if rec and "o_proj" in rec:
        o = rec["o_proj"]
        others = {k: r for k, r in rec.items() if k != "o_proj"}
        best = max(others, key=others.get) if others else None
        merge = bool(o >= SWAP_RECOVERS and (best is None or o >= others[best] - 1e-9))
        text = ", ".join(f"{k} {r:.0%}" for k, r in others.items())
        why.append(f"Merge: the o_proj swap recovers {o:.0%} of the gap (other swaps: {text})"
                   + (f"; the {best} swap carries more of the change" if best and others[best] > o else ""))
    freeze = None
    reached = v.get("freeze_reached")
    if reached and "oproj" in reached and "emb_head" in reached:
        freeze = bool(reached["oproj"] >= FREEZE_REACHES and reached["emb_head"] < HEAD_ALONE_MAX)
        why.append(f"Freeze: training Emb+Head+o_proj (+norms) reaches {reached['oproj']:.0%} of full fine-tuning's gain, "
                   f"Emb+Head (+norms) alone {reached['emb_head']:.0%}")
    elif v.get("freeze") is not None:
        why.append(f"Freeze: inconclusive, full fine-tuning at the lab's budget gains only {v['freeze_full_gain']:.2f}")
    votes = [x for x in (merge, freeze) if x is not None]
    if not votes:
        answer = "inconclusive"
    elif all(votes):
        answer = "yes"
    elif any(votes):
        answer = "mixed"
    else:
        answer = "no"
    return {"answer": answer, "merge_supports": merge, "freeze_supports": freeze, "why": why}


ANSWER_TEXT = {
    "yes": "o_proj localizes reasoning",
    "mixed": "mixed evidence: one stethoscope says o_proj localizes reasoning, the other says it does not",
    "no": "o_proj does NOT localize reasoning",
    "inconclusive": "no conclusion about o_proj",
}


def details(v: dict) -> str:
    """The numbers behind a verdict, in one sentence."""
    regime = "/".join(v["regime"]) if v.get("regime") else "regime not measured"
    delta = f", largest relative change of a linear module {v['max_rel_delta']:.2f}" if v.get("max_rel_delta") is not None else ""
    reasons = " ".join(w.rstrip(".") + "." for w in v["why"])
    return f"{regime}{delta}; chat accuracy base {v['base']:.2f} -> reasoning {v['reasoning']:.2f}. {reasons}"


STETHOSCOPES = (("delta", "Delta"), ("merge", "Merge"), ("freeze", "Freeze"), ("destruction", "Destruction"))


def stages_run(entries: list) -> tuple:
    """(stethoscopes that ran on every seed of the pair, those that did not), by display name."""
    ran = [title for key, title in STETHOSCOPES if all(key in e for e in entries)]
    return ran, [title for _, title in STETHOSCOPES if title not in ran]


def stages_note(entries: list) -> str:
    """Which stethoscopes the verdict rests on: a verdict from Merge alone is not the verdict of both."""
    ran, missing = stages_run(entries)
    voting = [t for t in ran if t in ("Merge", "Freeze")]
    text = f"stethoscopes run: {', '.join(ran) or 'none'}"
    if missing:
        text += f"; not run: {', '.join(missing)}"
    if len(voting) < 2:
        text += (f"; the verdict rests on {voting[0]} alone" if voting else "; neither Merge nor Freeze ran, so "
                 "there is nothing to decide on")
    return text


def sentence(name: str, v: dict, entries: list | None = None) -> str:
    note = f" [{stages_note(entries)}]" if entries is not None else ""
    return f"{name}: {ANSWER_TEXT[v['answer']]} ({details(v)}){note}"
