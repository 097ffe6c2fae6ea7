"""The one selector language: which modules of which layers.

Written as strings, because a YAML list under mergekit's ``parameters:`` is a gradient, not a list.

modules: ``"o_proj"``, ``"qkv,norm"`` (kinds and groups, comma-separated) or ``"re:<regex>"`` (searched
         in full tensor names; must be the whole selector).
layers:  ``"all"``, ``"7"``, ``"5-30"`` (inclusive, 0-based), ``"0-3,10"``, or fractions of depth
         ``"0.5-1.0"`` = layers i with 0.5 <= i/L < 1.0 (so 1.0 includes the last layer).
         Layers restrict per-layer modules. Model-level kinds (embed, final_norm, lm_head) are selected
         when named, whatever the layers; model-level kinds from groups (final_norm in ``norm``) are
         selected only with layers "all", so ``norm`` in "5-30" means the norms of those layers.

Strict: a syntax error, an unknown kind, a layer out of range, or a selector part that matches no
tensor of the model raises SelectorError naming the problem and what exists.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SelectorError  # noqa: F401  (re-exported)

import re
from dataclasses import dataclass
from typing import Optional

from sfn_merge_plugin.taxonomy import GROUPS, KINDS, ModelLayout




@dataclass(frozen=True)
class ModuleSelector:
    kinds: tuple = ()  # canonical kinds, groups expanded
    items: tuple = ()  # what the user wrote, for error messages: ((item, kinds), ...)
    regex: Optional[str] = None

    def __str__(self):
        return f"re:{self.regex}" if self.regex is not None else ",".join(i for i, _ in self.items)


@dataclass(frozen=True)
class LayerSelector:
    spec: str
    ranges: tuple = ()  # (("int", a, b) inclusive | ("frac", a, b)); () = all

    def resolve(self, num_layers: int) -> list:
        """Sorted layer indices for a model of ``num_layers`` layers."""
        if not self.ranges:
            return list(range(num_layers))
        out = set()
        for kind, a, b in self.ranges:
            if kind == "int":
                if b >= num_layers:
                    raise SelectorError(
                        f"layers {self.spec!r}: layer {b} is out of range, the model has {num_layers} "
                        f"layers (0-{num_layers - 1}); fractions of depth such as '0.5-1.0' adapt to any depth"
                    )
                out.update(range(a, b + 1))
            else:
                picked = [i for i in range(num_layers) if a <= i / num_layers < b]  # i/L < 1: b = 1.0 keeps the last
                if not picked:
                    raise SelectorError(f"layers {self.spec!r}: the fraction range {a}-{b} holds no layer of a {num_layers}-layer model")
                out.update(picked)
        return sorted(out)


def parse_modules(spec) -> ModuleSelector:
    if isinstance(spec, (list, tuple)):
        raise SelectorError(
            f"modules {spec!r}: write selectors as one comma-separated string (e.g. \"o_proj,norm\"); "
            "in mergekit a YAML list is a gradient over layers, not a list"
        )
    if not isinstance(spec, str) or not spec.strip():
        raise SelectorError(f"modules {spec!r}: expected a string such as \"o_proj\", \"qkv,norm\" or \"re:<regex>\"")
    spec = spec.strip()
    if spec.startswith("re:"):
        pattern = spec[3:]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SelectorError(f"modules {spec!r}: invalid regular expression ({exc})") from None
        if not pattern:
            raise SelectorError("modules 're:': the regular expression is empty")
        return ModuleSelector(regex=pattern)
    kinds, items = [], []
    for raw in spec.split(","):
        item = raw.strip()
        if item in GROUPS:
            expanded = GROUPS[item]
        elif item in KINDS:
            expanded = (item,)
        else:
            hint = " ('re:' must start the whole selector)" if item.startswith("re:") else ""
            raise SelectorError(
                f"modules {spec!r}: unknown module kind {item!r}{hint}; kinds: {', '.join(KINDS)}; "
                f"groups: {_GROUPS_TEXT}"
            )
        items.append((item, expanded))
        kinds.extend(k for k in expanded if k not in kinds)
    return ModuleSelector(kinds=tuple(kinds), items=tuple(items))


_INT = r"\d+"
_GROUPS_TEXT = "; ".join(f"{g} = {'+'.join(k)}" for g, k in GROUPS.items())


def parse_layers(spec) -> LayerSelector:
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        raise SelectorError(
            f"layers {spec!r}: write layers as one string such as \"5-30\" or \"0-3,10\"; "
            "in mergekit a YAML list is a gradient over layers, not a list"
        )
    if not isinstance(spec, str) or not spec.strip():
        raise SelectorError(f"layers {spec!r}: expected \"all\", \"7\", \"5-30\", \"0-3,10\" or \"0.5-1.0\"")
    spec = spec.strip()
    if spec == "all":
        return LayerSelector(spec)
    ranges = []
    for raw in spec.split(","):
        item = raw.strip()
        if re.fullmatch(_INT, item):
            ranges.append(("int", int(item), int(item)))
            continue
        m = re.fullmatch(rf"({_INT})\s*-\s*({_INT})", item)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise SelectorError(f"layers {spec!r}: range {item!r} runs backwards; write {b}-{a}")
            ranges.append(("int", a, b))
            continue
        m = re.fullmatch(r"(\d*\.\d+|\d+)\s*-\s*(\d*\.\d+|\d+)", item)
        if m and ("." in item):
            a, b = float(m.group(1)), float(m.group(2))
            if not (0.0 <= a < b <= 1.0):
                raise SelectorError(f"layers {spec!r}: fraction range {item!r} must satisfy 0 <= start < end <= 1")
            ranges.append(("frac", a, b))
            continue
        raise SelectorError(
            f"layers {spec!r}: cannot read {item!r}; write \"all\", an index \"7\", an inclusive range "
            "\"5-30\", a list \"0-3,10\" or a fraction of depth \"0.5-1.0\""
        )
    return LayerSelector(spec, tuple(ranges))


@dataclass(frozen=True)
class Selected:
    """One selected tensor: the whole of it (blocks == ()) or some blocks of a fused tensor."""

    name: str
    layer: Optional[int]
    kinds: tuple
    blocks: tuple = ()


def select(layout: ModelLayout, modules, layers="all") -> list:
    """Resolve selectors against a model; every part of the selector must match something."""
    msel = modules if isinstance(modules, ModuleSelector) else parse_modules(modules)
    lsel = layers if isinstance(layers, LayerSelector) else parse_layers(layers)
    wanted_layers = set(lsel.resolve(layout.num_layers))
    named = {item for item, _ in msel.items}
    out = []
    for t in layout.tensors:
        if t.layer is not None and t.layer not in wanted_layers:
            continue
        if t.layer is None and lsel.ranges and msel.regex is None and t.module not in named:
            continue  # model-level kinds from groups only with layers "all"
        if msel.regex is not None:
            if re.search(msel.regex, t.name):
                out.append(Selected(t.name, t.layer, t.kinds))
            continue
        if t.blocks:
            blocks = tuple(b for b in t.blocks if b.kind in msel.kinds)
            if len(blocks) == len(t.blocks):
                out.append(Selected(t.name, t.layer, t.kinds))
            elif blocks:
                out.append(Selected(t.name, t.layer, tuple(b.kind for b in blocks), blocks))
        elif t.module in msel.kinds:
            out.append(Selected(t.name, t.layer, t.kinds))
    _check_all_parts_matched(layout, msel, lsel, out)
    return out


def _check_all_parts_matched(layout, msel, lsel, out):
    where = f"layers {lsel.spec!r} of this {layout.architecture} ({layout.num_layers} layers)"
    if msel.regex is not None:
        if not out:
            some = ", ".join(t.name for t in layout.tensors[:4])
            raise SelectorError(f"modules 're:{msel.regex}' matches no tensor in {where}; tensor names look like: {some}, ...")
        return
    hit = {k for s in out for k in s.kinds}
    for item, kinds in msel.items:
        if not hit.intersection(kinds):
            raise SelectorError(
                f"modules {str(msel)!r}: {item!r} matches no tensor in {where}; "
                f"kinds this model has: {', '.join(layout.kinds_present())}"
            )


def summarize(selected: list) -> dict:
    """{layer or 'model': [kind, ...]} for printing plans."""
    table = {}
    for s in selected:
        key = "model" if s.layer is None else s.layer
        for k in s.kinds:
            table.setdefault(key, [])
            if k not in table[key]:
                table[key].append(k)
    return table
