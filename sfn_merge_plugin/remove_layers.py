"""Remove whole layers: a mergekit ``passthrough`` + ``slices`` recipe, made to work on transformers 5.

mergekit shrinks ``num_hidden_layers`` but keeps per-layer config lists (``layer_types``...) at the old
length, so transformers 5 refuses to save the config. ``rebuild_per_layer_lists`` picks, for every
such list, the entries of the layers that are kept.
"""

from __future__ import annotations

import yaml

from sfn_merge_plugin.checkpoint import open_checkpoint
from sfn_merge_plugin.selectors import SelectorError, parse_layers
from sfn_merge_plugin.taxonomy import layer_of, num_layers_of


def _kept_layers(merge_config):
    """[(source ModelReference, source layer index)] in output order."""
    kept = []
    for s in merge_config.slices:
        src = s.sources[0]
        kept.extend((src.model, i) for i in range(src.layer_range[0], src.layer_range[1]))
    return kept


def rebuild_per_layer_lists(out_config, merge_config, trust_remote_code: bool = False) -> None:
    kept = _kept_layers(merge_config)
    configs = {}
    for model, _ in kept:
        if model not in configs:
            configs[model] = model.config(trust_remote_code=trust_remote_code)
    for key, value in out_config.to_dict().items():
        if not isinstance(value, list) or key == "architectures":
            continue
        sources = [configs[m] for m, _ in kept]
        if all(isinstance(getattr(c, key, None), list) and len(getattr(c, key)) == num_layers_of(c) for c in sources):
            setattr(out_config, key, [getattr(configs[m], key)[i] for m, i in kept])


def slices_provenance(merge_config, output_names: list) -> dict:
    kept = _kept_layers(merge_config)
    source_model = kept[0][0].model.path if kept else None
    tensors = {}
    for name in output_names:
        layer = layer_of(name)
        if layer is None:
            tensors[name] = {"source": "base"}
        else:
            model, src_layer = kept[layer]
            tensors[name] = {"source": model.model.path, "source_layer": src_layer, "layer": layer}
    n_src = num_layers_of(kept[0][0].config()) if kept else 0
    removed = sorted(set(range(n_src)) - {i for _, i in kept})
    return {
        "sfn_operation": f"SfN remove: layers {_ranges(removed)} removed from {source_model} ({len(kept)} of {n_src} kept)",
        "method": "passthrough+slices",
        "base_model": source_model,
        "removed_layers": removed,
        "tensors": tensors,
    }


def _ranges(idx: list) -> str:
    out, start = [], None
    for i, v in enumerate(idx):
        if start is None:
            start = v
        if i == len(idx) - 1 or idx[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ",".join(out) or "none"


def remove_recipe(model: str, layers: str, dtype: str | None = None) -> dict:
    """A passthrough recipe keeping every layer of ``model`` except ``layers`` (selector language)."""
    ckpt = open_checkpoint(model, headers_only=True)
    n = num_layers_of(ckpt.config)
    drop = set(parse_layers(layers).resolve(n))
    if len(drop) == n:
        raise SelectorError(f"layers {layers!r} would remove all {n} layers; keep at least one")
    slices, run = [], None
    for i in range(n + 1):
        keep = i < n and i not in drop
        if keep and run is None:
            run = i
        if not keep and run is not None:
            slices.append({"sources": [{"model": model, "layer_range": [run, i]}]})
            run = None
    recipe = {"merge_method": "passthrough", "slices": slices}
    if dtype:
        recipe["dtype"] = dtype
    return recipe


HEADER = "# SfN Remove:"  # first line of every recipe `sfn remove-recipe` writes


def local_ref(model: str) -> str:
    """A local folder written so no tool takes it for a hub id: ``demo/base`` -> ``./demo/base``."""
    import os

    from sfn_merge_plugin.checkpoint import split_revision

    path, _ = split_revision(model)
    if os.path.isdir(os.path.expanduser(path)) and path.count("/") <= 1 and not path.startswith((".", "/", "~")):
        return "./" + model
    return model


def write_remove_recipe(model: str, layers: str, out_file: str, dtype: str | None = None, force: bool = False) -> str:
    """Write the recipe to ``out_file`` atomically; an existing file SfN did not write needs ``force``."""
    import os

    from sfn_merge_plugin.errors import OutputError
    from sfn_merge_plugin.outputs import atomic_write
    from sfn_merge_plugin.planning import DTYPES

    if dtype is not None and dtype not in DTYPES:
        raise SelectorError(f"dtype {dtype!r} is not one mergekit writes; use one of {', '.join(DTYPES)}")
    if os.path.isdir(out_file):
        raise OutputError(f"output {out_file} is a folder; give the recipe's file name, e.g. {out_file.rstrip('/')}/remove.yml")
    if os.path.exists(out_file) and not force:
        with open(out_file, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        if not first.startswith(HEADER):
            raise OutputError(f"output {out_file} exists and was not written by SfN; choose another file name "
                              "or pass --force to replace it")
    model = local_ref(model)
    text = f"{HEADER} layers {layers} of {model} (written by `sfn remove-recipe`)\n"
    text += yaml.safe_dump(remove_recipe(model, layers, dtype), sort_keys=False)
    atomic_write(out_file, text)
    return text
