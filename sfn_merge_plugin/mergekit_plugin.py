"""How SfN plugs into mergekit 0.1.5 (called by ``_sfn_hook`` right after mergekit's modules import).

- ``register_methods``: adds ``sfn_swap`` and ``sfn_destroy`` to mergekit's registry (idempotent).
- ``patch_planner``: validates SfN recipes when a MergePlanner is built, never reads a donor tensor
  that the output does not use, and keeps a tied base tied unless lm_head is selected.
- ``patch_run_merge``: validates before anything is loaded, writes into a temporary folder that is
  renamed on success (nothing half-written on failure), unties lm_head where needed, writes
  ``sfn_provenance.json``; and makes ``slices`` (layer removal) save a loadable transformers-5 config.
  During the merge, ``mergekit_io`` reads, schedules and writes (tensors kept unchanged are byte copies).
"""

from __future__ import annotations

import functools
import json
import logging
import os

from sfn_merge_plugin.errors import SfnError
from sfn_merge_plugin.mergekit_io import in_sfn_merge, patch_merge_io, sfn_merge_io

LOG = logging.getLogger("sfn")


def register_methods() -> None:
    from mergekit.merge_methods import registry

    from sfn_merge_plugin.methods.destroy import sfn_destroy
    from sfn_merge_plugin.methods.swap import sfn_swap

    for method in (sfn_swap, sfn_destroy):
        if method.spec.name not in {m.spec.name for m in registry.registered_methods()}:
            registry.register(method)


def patch_planner() -> None:
    from mergekit.plan import MergePlanner

    if getattr(MergePlanner, "_sfn_patched", False):
        return
    original_init, original_plan_tensor = MergePlanner.__init__, MergePlanner.plan_tensor

    @functools.wraps(original_init)
    def __init__(self, config, *args, **kwargs):
        from sfn_merge_plugin.planning import plan_from_merge_config

        self._sfn_plan = plan_from_merge_config(config)  # raises RecipeError before any tensor loads
        self._sfn_remove = is_layer_removal(config)
        original_init(self, config, *args, **kwargs)

    @functools.wraps(original_plan_tensor)
    def plan_tensor(self, weight, weights_in, models, cfg_reader):
        plan = getattr(self, "_sfn_plan", None)
        if plan is not None:
            chosen = plan.selected.get(weight.name)
            in_base = weight.name in plan.base.tensors
            untied_head = plan.untie and weight.name == "lm_head.weight"
            if chosen is None and not in_base and not untied_head:
                return  # e.g. lm_head of a tied base that stays tied
            if weight.optional and not in_base:
                # a tied base's lm_head written on its own: mergekit would skip it; load it through its tied name
                weight = weight.model_copy(update={"optional": False})
                weights_in = [w.model_copy(update={"optional": False}) for w in weights_in]
            if plan.method == "sfn_swap" and chosen is None:
                keep = [i for i, m in enumerate(models) if m == cfg_reader.base_model]
                weights_in, models = [weights_in[i] for i in keep], [models[i] for i in keep]
        return original_plan_tensor(self, weight, weights_in, models, cfg_reader)

    original_plan = MergePlanner._plan

    @functools.wraps(original_plan)
    def _plan(self):
        original_plan(self)
        if getattr(self, "_sfn_plan", None) is not None or self._sfn_remove:
            _plan_tensors_mergekit_does_not_know(self)

    MergePlanner.__init__, MergePlanner.plan_tensor, MergePlanner._plan = __init__, plan_tensor, _plan
    MergePlanner._sfn_patched = True


def _plan_tensors_mergekit_does_not_know(planner) -> None:
    """mergekit's architecture data omits some tensors (e.g. the biases of a Llama with attention_bias);
    it would silently drop them. Carry every checkpoint tensor through: a module includes its bias."""
    from mergekit.architecture import WeightInfo
    from mergekit.config import ConfigReader

    from sfn_merge_plugin.checkpoint import open_checkpoint
    from sfn_merge_plugin.planning import model_ref
    from sfn_merge_plugin.taxonomy import layer_of

    planned = {w.name for w, _ in planner._tensors}
    (definition,) = planner.config.modules.values()
    reader = ConfigReader(config=planner.config, t=0, module=definition)
    out_layer = 0
    for out_slice in definition.slices:
        sources = out_slice.sources
        cfg = reader.for_out_slice(out_slice)
        # names come from the base (a donor such as a pack may hold only some layers)
        first = next((s for s in sources if s.model == planner.config.base_model), sources[0])
        start, stop = first.layer_range
        for name in open_checkpoint(model_ref(first.model), headers_only=True).names:
            layer = layer_of(name)
            if layer is None:
                if len(definition.slices) > 1 or name in planned:
                    continue  # model-level tensors are planned by mergekit (once)
                dst, offset = name, None
            elif start <= layer < stop:
                dst, offset = _rename_layer(name, layer, out_layer + layer - start), layer - start
            else:
                continue
            if dst in planned:
                continue
            # each source reads its own layer (sources of one slice may start at different layers)
            inputs = [WeightInfo(name=name if offset is None else _rename_layer(name, layer, s.layer_range[0] + offset))
                      for s in sources]
            planner.plan_tensor(WeightInfo(name=dst), inputs, [s.model for s in sources], cfg)
            planned.add(dst)
        out_layer += stop - start


def _rename_layer(name: str, layer: int, new_layer: int) -> str:
    return name.replace(f".{layer}.", f".{new_layer}.", 1)


def is_layer_removal(merge_config) -> bool:
    """SfN's Remove: mergekit ``passthrough`` over ``slices`` of one model, one source per slice."""
    return (merge_config.merge_method == "passthrough" and bool(merge_config.slices)
            and all(len(s.sources) == 1 for s in merge_config.slices)
            and len({s.sources[0].model for s in merge_config.slices}) == 1)


def patch_run_merge() -> None:
    import mergekit.merge as mm

    if getattr(mm.run_merge, "_sfn_patched", False):
        return
    original_run, original_out_config = mm.run_merge, mm._model_out_config

    @functools.wraps(original_run)
    def run_merge(merge_config, out_path, options, config_source=None):
        from sfn_merge_plugin.outputs import clean_stale_temps, staged_folder
        from sfn_merge_plugin.planning import RecipeError, check_dtypes, check_slices, clear_caches, plan_from_merge_config

        clear_caches()  # a folder read by an earlier merge in this process may have been rewritten
        plan = plan_from_merge_config(merge_config)
        removes_layers = is_layer_removal(merge_config)
        if plan is None and not removes_layers:
            return original_run(merge_config, out_path, options, config_source)
        if config_source:
            from sfn_merge_plugin.strict_yaml import duplicate_key_error

            dup = duplicate_key_error(config_source, "recipe")
            if dup is not None:  # a caller that parsed the text with yaml.safe_load lost one of the values
                raise RecipeError(str(dup))
        if removes_layers:
            check_dtypes(merge_config)
            check_slices(merge_config)
        _check_out_path(out_path)
        clean_stale_temps(os.path.abspath(out_path))  # a killed earlier merge's temporary folder
        snapshot = merge_config.model_copy(deep=True)  # mergekit rewrites slices into modules while planning
        try:
            with staged_folder(out_path, "mergekit-yaml", check=False) as tmp, sfn_merge_io():
                original_run(merge_config, str(tmp), options, config_source)
                if plan is not None:
                    _finish_sfn_output(str(tmp), plan)
                else:
                    _finish_slices_output(str(tmp), snapshot)
        except SfnError as exc:
            raise exc if isinstance(exc, RecipeError) else RecipeError(str(exc)) from None

    @functools.wraps(original_out_config)
    def _model_out_config(config, arch_info, trust_remote_code=False):
        res = original_out_config(config, arch_info, trust_remote_code=trust_remote_code)
        if config.slices:
            from sfn_merge_plugin.remove_layers import rebuild_per_layer_lists

            rebuild_per_layer_lists(res, config, trust_remote_code=trust_remote_code)
        return res

    run_merge._sfn_patched = True
    mm.run_merge, mm._model_out_config = run_merge, _model_out_config
    _patch_card()
    patch_merge_io()
    # mergekit's own modules that imported run_merge before the hook ran
    import sys

    for name in ("mergekit.scripts.run_yaml", "mergekit.scripts.multimerge"):
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "run_merge", None) is original_run:
            mod.run_merge = run_merge


def _patch_card() -> None:
    """mergekit's model-card writer takes any existing ``a/b`` folder for a possible hub id and asks the hub
    (which fails offline, after the merge). During an SfN merge a path that exists locally is local."""
    import mergekit.card as card

    if getattr(card.is_hf, "_sfn_patched", False):
        return
    original = card.is_hf

    @functools.wraps(original)
    def is_hf(path: str) -> bool:
        if in_sfn_merge() and os.path.isdir(os.path.expanduser(path)):
            return False
        return original(path)

    is_hf._sfn_patched = True
    card.is_hf = is_hf


def patch_run_yaml() -> None:
    """``mergekit-yaml``: read SfN recipes strictly (duplicate keys, misspelt keys, look-alike letters) and
    report a missing, empty or malformed recipe in one line instead of a traceback."""
    import click
    from mergekit.scripts import run_yaml

    command = run_yaml.main
    if getattr(command.callback, "_sfn_patched", False):
        return
    original = command.callback

    @functools.wraps(original)
    def callback(*args, **kwargs):
        from mergekit.options import MergeOptions

        from sfn_merge_plugin.recipe_file import load_recipe

        # what mergekit's add_merge_options wrapper does: options -> MergeOptions, then main's body
        merge_options = MergeOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in MergeOptions.model_fields})
        config_file, out_path = kwargs["config_file"], kwargs["out_path"]
        merge_options.apply_global_options()
        try:
            merge_config, text = load_recipe(config_file)
        except SfnError as exc:
            raise click.ClickException(str(exc)) from None
        run_yaml.run_merge(merge_config, out_path, options=merge_options, config_source=text)

    callback._sfn_patched = True
    command.callback = callback


def _check_out_path(out_path: str) -> None:
    """The output folder is writable and, if not empty, SfN's own earlier output (else a one-line error)."""
    from sfn_merge_plugin.outputs import check_output_folder
    from sfn_merge_plugin.planning import RecipeError

    try:
        check_output_folder(out_path, what="output folder",
                            force_hint="(SfN only replaces its own earlier outputs; mergekit-yaml has no --force)")
    except SfnError as exc:
        raise RecipeError(str(exc)) from None


def _output_tensor_names(out_dir: str) -> list:
    from sfn_merge_plugin.checkpoint import safetensors_files, _safetensors_header

    names = []
    for f in safetensors_files(out_dir):
        names.extend(_safetensors_header(f))
    return names


def _finish_sfn_output(out_dir: str, plan) -> None:
    from sfn_merge_plugin.provenance import merge_provenance, write_provenance

    if plan.untie:
        cfg_path = os.path.join(out_dir, "config.json")
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["tie_word_embeddings"] = False
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
    for note in plan.notes:
        LOG.warning("sfn: %s", note)
    write_provenance(out_dir, merge_provenance(plan, _output_tensor_names(out_dir)))


def _finish_slices_output(out_dir: str, merge_config) -> None:
    from sfn_merge_plugin.provenance import write_provenance
    from sfn_merge_plugin.remove_layers import slices_provenance

    write_provenance(out_dir, slices_provenance(merge_config, _output_tensor_names(out_dir)))
