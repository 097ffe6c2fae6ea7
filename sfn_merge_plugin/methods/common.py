"""Parameter types shared by the SfN merge methods: validated by pydantic while mergekit plans.

Two ways in: through a recipe (``mergekit-yaml``/``run_merge``), where selectors are resolved against the
base model's checkpoint; and mergekit's in-memory API (``merge_state_dicts``), where they are resolved
against the tensor names given, and ``modules`` left out means every tensor given.
"""

import math
import re
from typing import Literal, Optional, Union

from pydantic import AfterValidator, BeforeValidator, Field
from typing_extensions import Annotated

from sfn_merge_plugin.selectors import Selected, SelectorError, parse_layers, parse_modules


def _modules(value):
    if value is not None:
        parse_modules(value)
    return value


def _layers(value) -> str:
    parse_layers(value)
    return str(value)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


ModulesParam = Annotated[Optional[str], AfterValidator(_modules)]
LayersParam = Annotated[Union[str, int], BeforeValidator(lambda v: v if isinstance(v, bool) else str(v) if isinstance(v, int) else v), AfterValidator(_layers)]
ModeParam = Literal["zero", "reinit"]
# ReInit's N(mean, std): finite and within sane ranges (the same as planning.MEAN_RANGE / STD_RANGE)
MeanParam = Annotated[float, Field(ge=-10.0, le=10.0), AfterValidator(_finite)]
StdParam = Annotated[float, Field(ge=0.0, le=10.0), AfterValidator(_finite)]
SeedParam = Annotated[int, Field(ge=0, lt=2 ** 63)]


def model_path(entry) -> Optional[str]:
    """The "path[@revision]" behind a TensorGroup entry (its id is a mergekit ModelReference), or None for
    mergekit's in-memory API (ids are whatever the caller chose)."""
    from sfn_merge_plugin.planning import model_ref

    ref = getattr(entry.id, "model", None)
    if ref is None or not hasattr(ref, "path"):
        return None
    return model_ref(entry.id)


def in_memory_selection(name: str, modules, layers) -> Optional[Selected]:
    """Selectors against a tensor name alone (mergekit's in-memory API: no checkpoint, no config)."""
    from sfn_merge_plugin.taxonomy import TaxonomyError, classify, layer_of

    layer = layer_of(name)
    lsel = parse_layers(layers)
    if lsel.ranges:
        if any(kind != "int" for kind, _, _ in lsel.ranges):
            raise SelectorError(f"layers {lsel.spec!r}: fractions of depth need the model's depth; in-memory merges "
                                "take layer numbers (e.g. '5-30')")
        if layer is None or not any(a <= layer <= b for _, a, b in lsel.ranges):
            return None
    if modules is None:
        return Selected(name, layer, ())
    msel = parse_modules(modules)
    if msel.regex is not None:
        return Selected(name, layer, ()) if re.search(msel.regex, name) else None
    try:
        info = classify(name, {})
    except (TaxonomyError, KeyError, TypeError):
        return None  # a name outside the taxonomy is no module kind: kept
    if info.module in msel.kinds:
        return Selected(name, layer, info.kinds)
    return None
