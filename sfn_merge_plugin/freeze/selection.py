"""Which parameters a Freeze run trains: Table 2 presets or selectors, resolved on a model's own names.

``sfn_trainable`` is a preset (``emb_head``, ``oproj``, ``qkvo``, ``all``), a mapping
``{modules: ..., layers: ...}`` in SfN's selector language, or a list of those (their union).
Presets follow the paper's rows and always train every norm, the embedding and lm_head; a mapping
trains exactly what it selects. Strict: a part that matches nothing, part of a fused tensor, or only one
side of a tied embedding/lm_head pair is an error (``requires_grad`` is all or nothing per tensor).
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from sfn_merge_plugin.selectors import SelectorError, parse_layers, parse_modules, select
from sfn_merge_plugin.taxonomy import SUPPORTED_ARCHITECTURES, TaxonomyError, layout_from_names

# preset -> module selector (None: every parameter); layers are always "all"
PRESETS = {
    "emb_head": "embed,lm_head,norm",
    "oproj": "embed,lm_head,norm,o_proj",
    "qkvo": "embed,lm_head,norm,attn",
    "all": None,
}
PRESET_ROWS = {
    "emb_head": "Emb+Head (+norms)",
    "oproj": "Emb+Head+o_proj (+norms)",
    "qkvo": "Emb+Head+{q,k,v,o} (+norms)",
    "all": "full fine-tuning",
}
_MAPPING_KEYS = ("modules", "layers")


class FreezeError(SfnError):
    """An ``sfn_trainable`` selection that cannot be applied; the message names the problem and the fix."""


@dataclass(frozen=True)
class Part:
    """One selector of the union: ``modules`` None means every parameter."""

    modules: Optional[str]
    layers: str = "all"
    label: str = ""  # what the user wrote, for messages and the report


def parse_spec(spec) -> tuple:
    """Check an ``sfn_trainable`` value without a model (so a typo fails before any weight loads)."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise FreezeError("sfn_trainable is an empty list; give a preset (emb_head, oproj, qkvo, all) "
                              "or {modules: ...}")
        parts = []
        for i, item in enumerate(spec):
            if isinstance(item, (list, tuple)):
                raise FreezeError(f"sfn_trainable[{i}] is a list; nest at most one level (a list of presets/mappings)")
            parts.extend(_parse_one(item, f"sfn_trainable[{i}]"))
        return tuple(parts)
    return _parse_one(spec, "sfn_trainable")


def _parse_one(spec, where: str) -> tuple:
    if isinstance(spec, str):
        name = spec.strip()
        if name in PRESETS:
            return (Part(PRESETS[name], "all", name),)
        hint = ""
        try:
            parse_modules(name)
            hint = (f"; to train exactly the modules {name!r} write {{modules: {name!r}}} (add 'embed,lm_head,norm' "
                    "as the presets do: the paper reports that runs without them do not converge)")
        except SelectorError:
            pass
        raise FreezeError(f"{where}: unknown preset {spec!r}; presets: {', '.join(PRESETS)}{hint}")
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in _MAPPING_KEYS]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), _MAPPING_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FreezeError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}{hint}; "
                              "a mapping takes modules (required) and layers")
        if "modules" not in spec:
            raise FreezeError(f"{where}: a mapping needs 'modules', "
                              "e.g. {modules: \"embed,lm_head,norm,o_proj\", layers: \"all\"}")
        modules, layers = spec["modules"], spec.get("layers", "all")
        try:
            parse_modules(modules)
            parse_layers(layers)
        except SelectorError as exc:
            raise FreezeError(f"{where}: {exc}") from None
        layers = str(layers).strip()
        return (Part(modules.strip(), layers, f"modules={modules.strip()!r} layers={layers!r}"),)
    if spec is None:
        raise FreezeError(f"{where} is empty; remove the key for plain TRL, or give a preset ({', '.join(PRESETS)})")
    raise FreezeError(f"{where}: expected a preset name, a mapping {{modules, layers}} or a list of them, "
                      f"got {type(spec).__name__} {spec!r}")


@dataclass
class Selection:
    """A resolved selection: the model's parameter names split into trainable and frozen."""

    parts: tuple
    layout: object  # taxonomy.ModelLayout
    numel: dict  # parameter name -> number of elements (ds_numel under ZeRO-3)
    trainable: frozenset
    tied_to: Optional[str]  # the embedding a tied lm_head shares, else None

    @property
    def frozen(self) -> frozenset:
        return frozenset(self.numel) - self.trainable


def _numel(p) -> int:
    # under ZeRO-3 a parameter is partitioned (p.numel() is 0 or a shard): ds_numel is its full size
    return int(p.ds_numel) if hasattr(p, "ds_numel") else int(p.numel())


def _taxonomy_config(model) -> dict:
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    arch = type(model).__name__
    if arch in SUPPORTED_ARCHITECTURES or not config.get("architectures"):
        config["architectures"] = [arch]  # the class is what names the parameters; a bare from_config model has none
    return config


def resolve(model, spec) -> Selection:
    """Resolve ``spec`` against ``model.named_parameters()``; raises FreezeError/SelectorError/TaxonomyError."""
    parts = spec if isinstance(spec, tuple) and all(isinstance(p, Part) for p in spec) else parse_spec(spec)
    numel = {name: _numel(p) for name, p in model.named_parameters()}
    if any(n.startswith("base_model.model.") for n in numel):
        raise FreezeError("this is a PEFT model: sfn_trainable selects parameters of a full model; drop peft_config "
                          "(or use PEFT's own target_modules), not both")
    try:
        layout = layout_from_names(_taxonomy_config(model), numel)
    except TaxonomyError as exc:
        raise FreezeError(f"cannot map this model's parameters to SfN's module taxonomy: {exc}") from None
    tied_head = next((t for t in layout.tensors if t.tied_to is not None), None)
    whole, blocks = set(), {}
    head_selected = embed_selected = False  # of a tied pair: one tensor, two names
    for part in parts:
        if part.modules is None:
            whole.update(numel)
            head_selected = embed_selected = True
            continue
        try:
            chosen = select(layout, part.modules, part.layers)
        except SelectorError as exc:
            raise FreezeError(f"sfn_trainable ({part.label}): {exc}") from None
        for s in chosen:
            if tied_head is not None and s.name == tied_head.name:
                head_selected = True
                whole.add(tied_head.tied_to)
                continue
            if tied_head is not None and s.name == tied_head.tied_to:
                embed_selected = True
            if s.blocks:
                blocks.setdefault(s.name, set()).update(s.kinds)
            else:
                whole.add(s.name)
    infos = layout.by_name()
    for name, kinds in blocks.items():
        if name in whole:
            continue
        fused = infos[name].kinds
        if set(fused) <= kinds:  # the union of parts covers every block
            whole.add(name)
            continue
        raise FreezeError(
            f"sfn_trainable selects only {'+'.join(k for k in fused if k in kinds)} of the fused tensor {name} "
            f"(it holds {'+'.join(fused)}); requires_grad is per tensor, so part of it cannot stay frozen. "
            f"Select all of {'+'.join(fused)} (e.g. 'qkv' or 'attn') or none of them"
        )
    if tied_head is not None:
        if embed_selected != head_selected:
            side = "lm_head" if head_selected else tied_head.tied_to
            raise FreezeError(
                f"this model ties lm_head to {tied_head.tied_to}: they are one tensor, so training {side} trains "
                "both. Select both 'embed' and 'lm_head', or neither (or untie the model first)"
            )
    if not whole:
        raise FreezeError("sfn_trainable leaves nothing trainable")
    return Selection(parts, layout, numel, frozenset(whole), tied_head.tied_to if tied_head else None)


def trainable_parameters(model, spec) -> list:
    """Names of the parameters ``spec`` trains, in the model's order."""
    sel = resolve(model, spec)
    return [n for n in sel.numel if n in sel.trainable]


def apply_freeze(model, spec) -> dict:
    """Set ``requires_grad`` on every parameter of ``model`` from ``spec``; return the report (a dict)."""
    sel = resolve(model, spec)
    for name, p in model.named_parameters():
        p.requires_grad_(name in sel.trainable)
    return report(sel, spec)


def report(sel: Selection, spec=None) -> dict:
    """The JSON-able summary: totals, counts per module kind, and the trainable tensor names."""
    infos = sel.layout.by_name()
    kinds = {}
    for name, n in sel.numel.items():
        row = kinds.setdefault(infos[name].module, {"tensors_trainable": 0, "tensors_frozen": 0,
                                                    "params_trainable": 0, "params_frozen": 0})
        side = "trainable" if name in sel.trainable else "frozen"
        row[f"tensors_{side}"] += 1
        row[f"params_{side}"] += n
    total = sum(sel.numel.values())
    trainable = sum(n for name, n in sel.numel.items() if name in sel.trainable)
    presets = [p.label for p in sel.parts if p.label in PRESETS]
    return {
        "sfn_trainable": spec if spec is not None else [p.label for p in sel.parts],
        "row": PRESET_ROWS[presets[0]] if len(sel.parts) == 1 and presets else None,
        "parts": [{"modules": p.modules or "<every parameter>", "layers": p.layers} for p in sel.parts],
        "architecture": sel.layout.architecture,
        "num_layers": sel.layout.num_layers,
        "lm_head_tied_to": sel.tied_to,
        "parameters": {"total": total, "trainable": trainable, "frozen": total - trainable,
                       "trainable_fraction": round(trainable / total, 6) if total else 0.0},
        "tensors": {"total": len(sel.numel), "trainable": len(sel.trainable),
                    "frozen": len(sel.numel) - len(sel.trainable)},
        "by_kind": kinds,
        "trainable_tensors": [n for n in sel.numel if n in sel.trainable],
    }


def format_report(rep: dict) -> str:
    """A short table for the console: per module kind, tensors and parameters trainable / frozen."""
    p = rep["parameters"]
    head = rep["row"] or ", ".join(f"{x['modules']} @ layers {x['layers']}" for x in rep["parts"])
    lines = [
        f"[sfn] freeze: {head}: {p['trainable']:,} of {p['total']:,} parameters trainable "
        f"({100 * p['trainable_fraction']:.2f}%), "
        f"{rep['tensors']['frozen']} of {rep['tensors']['total']} tensors frozen",
        f"[sfn]   {'module':<26}{'tensors train/frozen':>22}{'params trainable':>18}{'params frozen':>16}",
    ]
    for kind, row in rep["by_kind"].items():
        lines.append(f"[sfn]   {kind:<26}{row['tensors_trainable']:>11}/{row['tensors_frozen']:<10}"
                     f"{row['params_trainable']:>18,}{row['params_frozen']:>16,}")
    if rep["lm_head_tied_to"]:
        lines.append(f"[sfn]   lm_head is tied to {rep['lm_head_tied_to']} (one tensor, counted under embed)")
    return "\n".join(lines)
