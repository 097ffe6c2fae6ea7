"""What came from where: the ``sfn_provenance.json`` and model-card line of every SfN output folder."""

from __future__ import annotations

import os

PROVENANCE_FILE = "sfn_provenance.json"


def merge_provenance(plan, output_names: list) -> dict:
    """Per output tensor: 'base', 'donor', 'donor blocks q_proj,...', or the destruction applied."""
    tensors = {}
    for name in output_names:
        s = plan.selected.get(name)
        if s is None:
            tensors[name] = {"source": "base"}
            continue
        if plan.method == "sfn_swap":
            entry = {"source": "donor"} if not s.blocks else {"source": "base", "donor_blocks": list(s.kinds)}
        else:
            p = plan.params
            what = "zero" if p["mode"] == "zero" else f"reinit(mean={p['mean']}, std={p['std']}, seed={p['seed']})"
            entry = {"source": "base", "destruction": what}
            if s.blocks:
                entry["blocks"] = list(s.kinds)
        entry.update(layer=s.layer, modules=list(s.kinds))
        tensors[name] = entry
    return {
        "sfn_operation": operation_line(plan),
        "method": plan.method,
        "base_model": plan.base.path,
        "donor_model": plan.donor.path if plan.donor else None,
        "parameters": plan.params,
        "untied_lm_head": plan.untie,
        "notes": plan.notes,
        "tensors": tensors,
    }


def operation_line(plan) -> str:
    p = plan.params
    if plan.method == "sfn_swap":
        return f"SfN sfn_swap: modules {p['modules']!r} of layers {p['layers']!r} from {plan.donor.path} into {plan.base.path}"
    return f"SfN sfn_destroy: {p['mode']} of modules {p['modules']!r} in layers {p['layers']!r} of {plan.base.path}"


def write_provenance(out_dir: str, record: dict) -> None:
    """``sfn_provenance.json`` and the model card's SfN line, each written atomically."""
    from sfn_merge_plugin.outputs import atomic_write, atomic_write_json

    atomic_write_json(os.path.join(out_dir, PROVENANCE_FILE), record)
    card = os.path.join(out_dir, "README.md")
    existing = open(card, encoding="utf-8").read() if os.path.exists(card) else ""
    atomic_write(card, existing.rstrip("\n") + f"\n\n{record['sfn_operation']} (details: `{PROVENANCE_FILE}`).\n")
