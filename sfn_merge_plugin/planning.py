"""Validate an SfN merge recipe and resolve it to tensors, from configs and file headers only.

Runs before mergekit loads any tensor (``mergekit-yaml`` through the hook, and ``sfn plan``), so a bad
recipe fails fast with a message that names the problem, and nothing is written.
"""

from __future__ import annotations

from sfn_merge_plugin.errors import SfnError

import functools
from dataclasses import dataclass, field
from typing import Optional

from sfn_merge_plugin.checkpoint import Checkpoint, CheckpointError, layout_of, open_checkpoint
from sfn_merge_plugin.selectors import SelectorError, parse_layers, parse_modules, select
from sfn_merge_plugin.taxonomy import TaxonomyError

# method -> {parameter: default}; None = required
METHOD_PARAMETERS = {
    "sfn_swap": {"modules": None, "layers": "all"},
    "sfn_destroy": {"modules": None, "layers": "all", "mode": None, "mean": 0.0, "std": 0.02, "seed": 0},
}
# the dtypes mergekit accepts for `dtype:` / `out_dtype:` (mergekit.common.dtype_from_name)
DTYPES = ("bfloat16", "float16", "float32", "float64")
# sane ranges of sfn_destroy's ReInit draw: beyond them the values resemble no initialisation
MEAN_RANGE, STD_RANGE = (-10.0, 10.0), (0.0, 10.0)
# config fields that legitimately differ between a base and its fine-tune
_CONFIG_NOISE = {"_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache"}

try:  # mergekit-yaml is a click program: a ClickException prints "Error: ..." without a traceback
    from click import ClickException as _Base
except ImportError:  # pragma: no cover
    _Base = Exception


class RecipeError(_Base, SfnError):
    """A recipe that cannot run as written; the message names the problem and the fix."""

    def __init__(self, message: str):
        _Base.__init__(self, message)
        self.message = message

    def __str__(self):
        return self.message


@dataclass
class MergePlan:
    method: str
    base: Checkpoint
    donor: Optional[Checkpoint]
    params: dict
    selected: dict  # tensor name -> selectors.Selected
    untie: bool = False  # write lm_head separately and set tie_word_embeddings: false
    notes: list = field(default_factory=list)


def _scalar(key, value, where):
    if isinstance(value, (list, tuple, dict)):
        raise RecipeError(
            f"{where}: parameter {key!r} is a {type(value).__name__}; SfN parameters are plain values. "
            "In mergekit a YAML list is a gradient over layers and a mapping is a filter; write selectors "
            "as one string, e.g. modules: \"o_proj,norm\", layers: \"5-30\""
        )
    return value


def collect_parameters(method: str, top: Optional[dict], per_model: list) -> dict:
    """Top-level parameters, rejecting unknown keys (mergekit silently ignores them) and per-model ones
    (mergekit hands SfN's methods only the top-level ``parameters:``)."""
    spec = METHOD_PARAMETERS[method]
    for where, params in per_model:
        if params:
            raise RecipeError(
                f"{where}: {method} reads only the top-level `parameters:`; move "
                f"{', '.join(sorted(params))} there (mergekit would ignore them here)"
            )
    found = {}
    for where, params in [("parameters", top)]:
        for key, value in (params or {}).items():
            if key not in spec:
                close = [k for k in spec if k.startswith(key[:3])]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RecipeError(
                    f"{where}: unknown parameter {key!r} for {method}{hint}; it accepts: {', '.join(spec)}. "
                    "mergekit would silently ignore it"
                )
            value = _scalar(key, value, where)
            if key in found and found[key] != value:
                raise RecipeError(f"parameter {key!r} is set twice with different values ({found[key]!r}, {value!r})")
            found[key] = value
    for key, default in spec.items():
        if key not in found:
            if default is None:
                raise RecipeError(f"{method} needs parameter {key!r} under parameters: (accepted: {', '.join(spec)})")
            found[key] = default
    if isinstance(found["layers"], int) and not isinstance(found["layers"], bool):
        found["layers"] = str(found["layers"])  # `layers: 7` in YAML
    return found


def check_parameter_values(method: str, params: dict) -> dict:
    from sfn_merge_plugin.validation import check_finite, non_ascii

    for key in ("modules", "layers"):
        problem = non_ascii(params[key], f"{method}: {key}") if isinstance(params[key], str) else None
        if problem:
            raise RecipeError(problem)
    try:
        parse_modules(params["modules"])
        parse_layers(params["layers"])
    except SelectorError as exc:
        raise RecipeError(str(exc)) from None
    if method == "sfn_destroy":
        from sfn_merge_plugin.destruction import MODES  # imports torch: only when a destroy recipe is checked

        if params["mode"] not in MODES:
            raise RecipeError(
                f"sfn_destroy: mode {params['mode']!r} is not one of {', '.join(MODES)}; to remove whole layers "
                "use a passthrough recipe with slices (`sfn remove-recipe MODEL --layers 5-30`)"
            )
        for key, (lo, hi) in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
            problem = check_finite(params[key], f"sfn_destroy: {key}", lo, hi)
            if problem:
                raise RecipeError(problem + f" (ReInit draws N(mean, std); the paper uses mean 0, std 0.02)")
        if not isinstance(params["seed"], int) or isinstance(params["seed"], bool):
            raise RecipeError(f"sfn_destroy: seed must be an integer, got {params['seed']!r}")
    return params


def _open(ref, role):
    try:
        return open_checkpoint(str(ref), headers_only=True)
    except CheckpointError as exc:
        raise RecipeError(f"{role} model: {exc}") from None


def _config_differences(base: dict, donor: dict) -> list:
    keys = sorted((set(base) | set(donor)) - _CONFIG_NOISE)
    return [f"{k}: base {base.get(k)!r}, donor {donor.get(k)!r}" for k in keys if base.get(k) != donor.get(k)]


def build_plan(method: str, base_ref: str, donor_ref: Optional[str], params: dict, out_dtype=None) -> MergePlan:
    """Resolve a validated parameter set against the checkpoints' headers."""
    base = _open(base_ref, "base")
    donor = _open_donor(donor_ref) if donor_ref is not None else None
    try:
        layout = layout_of(base)
        selected = cached_selection(str(base_ref), params["modules"], params["layers"])
        plan = MergePlan(method, base, donor, params, selected)
        if donor is not None:
            donor_layout = layout_of(donor)
            if donor_layout.architecture != layout.architecture or donor_layout.num_layers != layout.num_layers:
                raise RecipeError(
                    f"base is {layout.architecture} with {layout.num_layers} layers, donor is "
                    f"{donor_layout.architecture} with {donor_layout.num_layers} layers: sfn_swap needs the same architecture and depth"
                )
            _check_donor_tensors(plan, layout, donor_layout, out_dtype)
            _check_pack_donor(plan)
            plan.notes += [f"config differs (output keeps the base's): {d}" for d in _config_differences(base.config, donor.config)]
        if layout.tied_embeddings:
            _untie_if_needed(plan, layout)
        return plan
    except (SelectorError, TaxonomyError) as exc:
        raise RecipeError(str(exc)) from None


def _untie_if_needed(plan: MergePlan, layout) -> None:
    """A tied base whose embedding and head would end up different is written untied, and we say so."""
    kinds = {k for s in plan.selected.values() for k in s.kinds}
    head, embed = "lm_head" in kinds, "embed" in kinds
    if head == embed and plan.method == "sfn_destroy" and plan.params["mode"] == "zero":
        return  # both zeroed: still one tensor
    if not head and not embed:
        return
    if head and embed and plan.method == "sfn_swap" and plan.donor is not None and layout_of(plan.donor).tied_embeddings:
        return  # both from a tied donor: still tied
    plan.untie = True
    what = {"sfn_swap": "taken from the donor", "sfn_destroy": "destroyed"}[plan.method]
    if head and embed:
        plan.notes.append(f"base ties lm_head to its embedding; both are {what} separately, so the output is untied")
    elif head:
        plan.notes.append(f"base ties lm_head to its embedding; only lm_head is {what}, so the output is untied and keeps the base's embedding")
    else:
        plan.notes.append(f"base ties lm_head to its embedding; only embed is {what}, so the output is untied and its lm_head keeps the base's values")


def _open_donor(ref):
    """The donor's headers; an SfN pack folder holds only the selected layers, so it is read as a pack."""
    from sfn_merge_plugin.packs.donor import is_pack, open_pack

    if is_pack(ref):
        try:
            return open_pack(str(ref))
        except SfnError as exc:
            raise RecipeError(f"donor model: {exc}") from None
    return _open(ref, "donor")


def _check_pack_donor(plan) -> None:
    """A donor that is an SfN pack folder (`sfn pack extract`) must be for this base: its checksums are checked."""
    from sfn_merge_plugin.packs.donor import check_pack_donor, is_pack

    if plan.method == "sfn_swap" and is_pack(plan.donor.path):
        try:
            check_pack_donor(plan)
        except SfnError as exc:
            raise RecipeError(str(exc)) from None


def _check_donor_tensors(plan, layout, donor_layout, out_dtype):
    donor_infos = donor_layout.by_name()
    base_infos = layout.by_name()
    for name in plan.selected:
        info = donor_infos.get(name)
        if info is None:
            raise RecipeError(f"selected tensor {name!r} is missing from the donor {plan.donor.path}")
        src = info.tied_to or name
        b, d = plan.base.tensors[base_infos[name].tied_to or name], plan.donor.tensors[src]
        if tuple(b.shape) != tuple(d.shape):
            raise RecipeError(f"shape mismatch for {name!r}: base {tuple(b.shape)}, donor {src} {tuple(d.shape)}")
        if b.dtype != d.dtype and out_dtype is None:
            raise RecipeError(
                f"{name!r} is {b.dtype} in the base but {d.dtype} in the donor: set `out_dtype:` in the recipe "
                "(e.g. out_dtype: bfloat16) to say which dtype the output should have"
            )


@functools.lru_cache(maxsize=64)
def cached_selection(base_ref: str, modules: str, layers: str) -> dict:
    """tensor name -> Selected for a model, from its headers; what the merge kernels consult per tensor."""
    try:
        layout = layout_of(_open(base_ref, "base"))
        return {s.name: s for s in select(layout, modules, layers)}
    except (SelectorError, TaxonomyError) as exc:
        raise RecipeError(str(exc)) from None


@functools.lru_cache(maxsize=16)
def cached_plan(method: str, base_ref: str, donor_ref: Optional[str], params: tuple, out_dtype=None) -> MergePlan:
    return build_plan(method, base_ref, donor_ref, dict(params), out_dtype)


def model_ref(reference) -> str:
    """A mergekit ModelReference (or InputModelDefinition) as SfN's "path[@revision]" string."""
    ref = getattr(reference, "model", reference)
    ref = getattr(ref, "model", ref)  # InputModelDefinition -> ModelReference -> ModelPath
    return f"{ref.path}@{ref.revision}" if getattr(ref, "revision", None) else ref.path


def clear_caches() -> None:
    """Forget checkpoint headers read earlier (a folder may have been rewritten since)."""
    cached_selection.cache_clear()
    cached_plan.cache_clear()


def plan_from_merge_config(merge_config) -> Optional[MergePlan]:
    """The MergePlan of an SfN recipe (a mergekit MergeConfiguration); None for other methods."""
    method = merge_config.merge_method
    if method not in METHOD_PARAMETERS:
        return None
    check_dtypes(merge_config)
    if merge_config.slices or merge_config.modules:
        raise RecipeError(f"{method} works on whole models: use `models:` and `base_model:`, not `slices:`/`modules:`")
    if merge_config.base_model is None:
        raise RecipeError(f"{method} needs `base_model:` (the model that is kept, apart from the selected modules)")
    base_ref = model_ref(merge_config.base_model)
    entries = merge_config.models or []
    donors = [m for m in entries if m.model != merge_config.base_model]
    per_model = [(f"models[{i}] ({m.model.model.path}).parameters", m.parameters) for i, m in enumerate(entries)]
    if method == "sfn_swap" and len(donors) != 1:
        raise RecipeError(
            f"sfn_swap takes base_model plus exactly one donor in `models:`, found {len(donors)} donor(s)"
            + (": " + ", ".join(d.model.model.path for d in donors) if donors else "")
        )
    if method == "sfn_destroy" and donors:
        raise RecipeError(
            f"sfn_destroy acts on base_model alone; remove the other model(s) from `models:` ({', '.join(d.model.model.path for d in donors)})"
        )
    if any(m.model.lora for m in entries) or merge_config.base_model.lora:
        raise RecipeError(f"{method} does not apply LoRA adapters; merge the adapter into its model first")
    params = check_parameter_values(method, collect_parameters(method, merge_config.parameters, per_model))
    donor_ref = model_ref(donors[0]) if donors else None
    return cached_plan(method, base_ref, donor_ref, tuple(sorted(params.items())), merge_config.out_dtype or merge_config.dtype)


def is_sfn_recipe(data) -> bool:
    """A recipe SfN answers for: an SfN method (or a misspelling of one), or a layer-removal slices recipe."""
    import difflib

    if not isinstance(data, dict):
        return False
    method = str(data.get("merge_method", ""))
    if method in METHOD_PARAMETERS or method.startswith("sfn") or difflib.get_close_matches(method, list(METHOD_PARAMETERS), cutoff=0.75):
        return True
    slices = data.get("slices")
    if method == "passthrough" and isinstance(slices, list) and slices:
        try:
            return all(len(s["sources"]) == 1 for s in slices) and len({str(s["sources"][0]["model"]) for s in slices}) == 1
        except (KeyError, TypeError, IndexError):
            return False
    return False


def check_recipe_data(data: dict, source: str = "recipe") -> None:
    """Checks on a recipe's raw YAML that mergekit's pydantic model cannot make (it ignores unknown keys):
    misspelt top-level keys, an unknown method, non-ASCII look-alikes in the method and parameters."""
    from mergekit.config import MergeConfiguration

    from sfn_merge_plugin.validation import closest, non_ascii

    fields = list(MergeConfiguration.model_fields)
    for key in data:
        if key not in fields:
            raise RecipeError(
                f"{source}: unknown top-level key {key!r}{closest(key, fields)}; mergekit would silently ignore it. "
                f"Valid keys: {', '.join(fields)}"
            )
    method = data.get("merge_method")
    if isinstance(method, str):
        problem = non_ascii(method, f"{source}: merge_method")
        if problem:
            raise RecipeError(problem)
        from mergekit.merge_methods import registry

        names = sorted({m.spec.name for m in registry.registered_methods()} | set(METHOD_PARAMETERS))
        if method not in names:
            raise RecipeError(f"{source}: unknown merge_method {method!r}{closest(method, names)}; available: {', '.join(names)}")
    params = data.get("parameters")
    if isinstance(params, dict):
        for key, value in params.items():
            for text, what in ((key, "parameter name"), (value, f"parameter {key!r}")):
                problem = non_ascii(text, f"{source}: {what}") if isinstance(text, str) else None
                if problem:
                    raise RecipeError(problem)


def validation_message(exc, source: str = "recipe") -> str:
    """A pydantic ValidationError of MergeConfiguration as one line: where, what, and the input."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if not str(x).startswith(("function-", "union[")))
        parts.append(f"{loc or 'top level'}: {err.get('msg')} (got {err.get('input')!r:.80})")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{source} is not a valid mergekit recipe: " + "; ".join(parts) + more


def check_dtypes(merge_config, source: str = "recipe") -> None:
    for key in ("dtype", "out_dtype"):
        value = getattr(merge_config, key, None)
        if value is not None and str(value).removeprefix("torch.") not in DTYPES:
            from sfn_merge_plugin.validation import closest

            raise RecipeError(f"{source}: {key} {value!r} is not a dtype mergekit writes{closest(value, DTYPES)}; use one of {', '.join(DTYPES)}")


def check_slices(merge_config, source: str = "recipe") -> None:
    """Every slice's layer_range lies within its model's depth (mergekit fails on it only mid-merge)."""
    from sfn_merge_plugin.taxonomy import num_layers_of

    for i, s in enumerate(merge_config.slices or []):
        for src in s.sources:
            ref = model_ref(src.model)
            start, stop = src.layer_range
            n = num_layers_of(_open(ref, f"slices[{i}]").config)
            if not 0 <= start < stop <= n:
                raise RecipeError(
                    f"{source}: slices[{i}] layer_range [{start}, {stop}] of {ref} is outside its {n} layers "
                    f"(a range [a, b) needs 0 <= a < b <= {n})"
                )
