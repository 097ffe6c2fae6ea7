"""A PEFT LoRA adapter (an SfN LoRA pack, or one ``trl sft --use_peft`` saved) merged into a base on disk.

W' = W + scale * B @ A in float32, cast to W's dtype (scale = lora_alpha / r, or / sqrt(r) with rsLoRA,
per module through ``rank_pattern`` / ``alpha_pattern``); ``lora_B.bias`` adds to the bias;
``modules_to_save`` tensors replace the base's. Checked first: every adapter key maps to a base tensor of
the right shape, and, when the folder has SfN's manifest, the base tensors' SHA-256 (a plain PEFT adapter
carries no checksum: only names and shapes can be checked, and a note says so).
"""

from __future__ import annotations

import math
from pathlib import Path

from sfn_merge_plugin.packs.manifest import ADAPTER_WEIGHTS, MANIFEST, PackError, header_of, read_manifest

PREFIXES = ("base_model.model.",)


def _pattern_value(patterns: dict, module: str, default):
    import re

    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def parse_adapter(pack) -> tuple:
    """(config, {module: {"A", "B", "bias"} keys}, {base tensor: key} for modules_to_save) of an adapter."""
    from sfn_merge_plugin.packs.lora import read_adapter_config

    config = read_adapter_config(pack)
    if config.get("peft_type") != "LORA":
        raise PackError(f"{pack}: peft_type {config.get('peft_type')!r}; sfn pack apply merges LoRA adapters only")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise PackError(f"{pack}: {flag} is set; merge this adapter with PEFT's merge_and_unload instead")
    file = Path(pack) / ADAPTER_WEIGHTS
    if not file.is_file():
        raise PackError(f"{pack}: {ADAPTER_WEIGHTS} is missing (a .bin adapter is a pickle SfN does not read)")
    header, _, _ = header_of(str(file))
    lora, whole = {}, {}
    for key in header:
        name = next((key[len(p):] for p in PREFIXES if key.startswith(p)), None)
        if name is None:
            raise PackError(f"{pack}: adapter key {key!r} does not start with {PREFIXES[0]!r}; not a causal-LM PEFT adapter")
        for part, tag in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias")):
            if name.endswith(part):
                module = name[: -len(part)]
                lora.setdefault(module, {})[tag] = key
                break
        else:
            whole[name.replace(".modules_to_save.", ".")] = key
    for module, parts in lora.items():
        if "A" not in parts or "B" not in parts:
            raise PackError(f"{pack}: module {module} has only {', '.join(parts)}; an adapter needs lora_A and lora_B")
    return config, lora, whole


def scale_of(config: dict, module: str) -> float:
    r = _pattern_value(config.get("rank_pattern"), module, config.get("r", 8))
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_replacements(base_ckpt, pack, progress: bool = True):
    """(layout, {tensor: Source}, untie, checked_base, notes) for ``apply_pack``; checks before any write."""
    import torch
    from tqdm.auto import tqdm

    from sfn_merge_plugin.checkpoint import layout_of
    from sfn_merge_plugin.packs.apply import tensor_bytes
    from sfn_merge_plugin.packs.writer import Source
    from sfn_merge_plugin.tensor_io import SafetensorsReader

    config, lora, whole = parse_adapter(pack)
    layout = layout_of(base_ckpt)
    infos = layout.by_name()
    file = str(Path(pack) / ADAPTER_WEIGHTS)
    header, _, _ = header_of(file)
    for module, parts in lora.items():
        name = module + ".weight"
        if name not in infos or infos[name].tied_to:
            raise PackError(f"adapter {pack} targets {module}, which base {base_ckpt.path} does not have as a linear "
                            "weight; use the adapter's base")
        out_dim, in_dim = base_ckpt.tensors[name].shape
        a, b = header[parts["A"]]["shape"], header[parts["B"]]["shape"]
        if len(a) != 2 or len(b) != 2 or a[1] != in_dim or b[0] != out_dim or a[0] != b[1]:
            raise PackError(f"adapter {pack}: {module} has lora_A {a} and lora_B {b}, the base weight is "
                            f"[{out_dim}, {in_dim}]; this adapter is for another model shape")
        if "bias" in parts and module + ".bias" not in base_ckpt.tensors:
            raise PackError(f"adapter {pack} adds a bias to {module}, which has none in base {base_ckpt.path}")
    for name, key in whole.items():
        if name not in infos:
            raise PackError(f"adapter {pack} saves {name}, which base {base_ckpt.path} does not have")
        if infos[name].tied_to or (infos[name].module == "embed" and layout.tied_embeddings):
            raise PackError(f"adapter {pack} saves {name} of a tied embedding/head; merge it with PEFT's merge_and_unload")
        if list(header[key]["shape"]) != list(base_ckpt.tensors[name].shape):
            raise PackError(f"adapter {pack}: {name} has shape {header[key]['shape']}, the base "
                            f"{list(base_ckpt.tensors[name].shape)}; this adapter is for another model shape")
    checked, notes = False, []
    if (Path(pack) / MANIFEST).is_file():
        from sfn_merge_plugin.packs.check import check_base_checksums, check_base_layout

        manifest = read_manifest(pack)
        check_base_layout(base_ckpt, manifest, pack)
        check_base_checksums(base_ckpt, layout, manifest, pack, progress)
        checked = True
    else:
        notes.append(f"{pack} is a plain PEFT adapter without SfN's manifest: the base was checked by tensor names and "
                     "shapes only (no checksums)")
    replace = {}
    with SafetensorsReader(file) as ad:
        readers = {}

        def base_tensor(name):
            e = base_ckpt.tensors[name]
            r = readers.get(e.file) or readers.setdefault(e.file, SafetensorsReader(e.file))
            return r.get_tensor(name)

        try:
            for module, parts in tqdm(sorted(lora.items()), desc="merge", unit="module", disable=not progress, leave=False):
                w = base_tensor(module + ".weight")
                s = scale_of(config, module)
                delta = ad.get_tensor(parts["B"]).float() @ ad.get_tensor(parts["A"]).float()
                replace[module + ".weight"] = Source(data=tensor_bytes((w.float() + s * delta).to(w.dtype)))
                if "bias" in parts:
                    bias = base_tensor(module + ".bias")
                    new = bias.float() + s * ad.get_tensor(parts["bias"]).float()
                    replace[module + ".bias"] = Source(data=tensor_bytes(new.to(bias.dtype)))
            for name, key in whole.items():
                t, dtype = ad.get_tensor(key), base_ckpt.tensors[name].dtype
                from sfn_merge_plugin.tensor_io import DTYPES

                if t.dtype != DTYPES[dtype]:
                    notes.append(f"{name}: the adapter stores {t.dtype}, cast to the base's {dtype}")
                replace[name] = Source(data=tensor_bytes(t.to(DTYPES[dtype])))
        finally:
            for r in readers.values():
                r.close()
    return layout, replace, False, checked, notes
