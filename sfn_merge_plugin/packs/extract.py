"""Base + fine-tune -> exact pack: the fine-tune's stored bytes of the selected tensors, and checksums.

The pack holds tuned values, not deltas: applying it is then exactly ``sfn_swap`` (a copy, no float
arithmetic, so bit for bit), and the base checksums already pin the one base it belongs to; a delta is
only useful on another base, which ``apply`` refuses anyway. The compressed, additive form is the LoRA
pack (``lora.py``). The selection is resolved by ``planning.build_plan`` (the code ``mergekit-yaml`` runs
for ``sfn_swap``), so the two agree on every tensor, fused block and tied head.
"""

from __future__ import annotations

import json
from pathlib import Path

from sfn_merge_plugin.packs.manifest import MANIFEST, WEIGHTS, Manifest, PackError, PackTensor, stored_sha256, sfn_version


def swap_plan(base: str, tuned: str, modules: str, layers: str = "all"):
    """The ``sfn_swap`` plan of a selection (headers only); a dtype change between the two is refused."""
    from sfn_merge_plugin.planning import build_plan, check_parameter_values, clear_caches

    clear_caches()
    params = check_parameter_values("sfn_swap", {"modules": modules, "layers": str(layers)})
    plan = build_plan("sfn_swap", base, tuned, params, out_dtype="keep")  # dtypes checked below, with a pack's wording
    for name in plan.selected:
        b, t = base_entry(plan, name), tuned_entry(plan, name)
        if b.dtype != t.dtype:
            raise PackError(f"{name} is {b.dtype} in the base but {t.dtype} in the fine-tune; a pack keeps the base's "
                            "dtype: save the fine-tune in the base's dtype first")
    return plan


def base_entry(plan, name):
    """The stored base tensor behind ``name`` (a tied head is the embedding)."""
    from sfn_merge_plugin.checkpoint import layout_of

    info = layout_of(plan.base).by_name()[name]
    return plan.base.tensors[info.tied_to or name]


def tuned_entry(plan, name):
    from sfn_merge_plugin.checkpoint import layout_of

    info = layout_of(plan.donor).by_name()[name]
    return plan.donor.tensors[info.tied_to or name]


def pack_names(plan) -> list:
    """Tensors the pack stores: the selection, less a tied head that stays tied to its (selected) embedding."""
    from sfn_merge_plugin.checkpoint import layout_of

    layout = layout_of(plan.base)
    tied_head = {t.name for t in layout.tensors if t.tied_to}
    return [t.name for t in layout.tensors if t.name in plan.selected and (plan.untie or t.name not in tied_head)]


def base_tensors(plan, names, progress: bool = True) -> list:
    """A PackTensor per name with the base's shape, dtype and checksum (streamed)."""
    from tqdm.auto import tqdm

    out = []
    for name in tqdm(names, desc="hash base", unit="tensor", disable=not progress, leave=False):
        s, e = plan.selected[name], base_entry(plan, name)
        out.append(PackTensor(name=name, layer=s.layer, kinds=list(s.kinds), shape=list(e.shape), dtype=e.dtype,
                              base_sha256=stored_sha256(e),
                              blocks=[[b.kind, b.dim, b.start, b.stop] for b in s.blocks]))
    return out


def manifest_for(plan, kind: str, base: str, tuned: str, tensors: list) -> Manifest:
    from sfn_merge_plugin.checkpoint import layout_of, split_revision

    layout = layout_of(plan.base)
    modules, layers = plan.params["modules"], plan.params["layers"]
    base_ref, base_rev = split_revision(str(base))
    tuned_ref, tuned_rev = split_revision(str(tuned))
    dtypes = sorted({t.dtype for t in tensors})
    return Manifest(kind=kind, modules=str(modules), layers=str(layers), architecture=layout.architecture,
                    num_layers=layout.num_layers, base_model=base_ref, base_revision=base_rev, tuned_model=tuned_ref,
                    tuned_revision=tuned_rev, dtype=",".join(dtypes), untie=bool(plan.untie), tensors=tensors,
                    sfn_version=sfn_version(), notes=list(plan.notes))


def extract_exact(base: str, tuned: str, out: str, modules: str, layers: str = "all", force: bool = False,
                  progress: bool = True) -> Manifest:
    """Write the exact pack of ``modules``/``layers`` of ``tuned`` over ``base`` to the folder ``out``."""
    from sfn_merge_plugin.outputs import atomic_write_json, check_output_folder, staged_folder
    from sfn_merge_plugin.packs.rawio import write_from_sources
    from sfn_merge_plugin.packs.manifest import header_of

    from sfn_merge_plugin.checkpoint import resolve_path

    check_output_folder(out, force=force)
    plan = swap_plan(resolve_path(base), resolve_path(tuned), modules, layers)
    names = pack_names(plan)
    tensors = base_tensors(plan, names, progress)
    items = []
    for t in tensors:
        e = tuned_entry(plan, t.name)
        header, _, data = header_of(e.file)
        begin, end = header[e.name]["data_offsets"]
        items.append((t.name, e.dtype, e.shape, e.file, data + begin, data + end))
    manifest = manifest_for(plan, "exact", base, tuned, tensors)
    with staged_folder(out, "pack extract", force=force, check=False) as tmp:
        if progress:
            print(f"sfn pack: writing {len(items)} tensors ({sum(i[5] - i[4] for i in items) / 2**20:.1f} MiB)")
        digests = write_from_sources(str(Path(tmp) / WEIGHTS), items, metadata={"format": "pt", "sfn_pack": "exact"})
        for t in tensors:
            t.sha256 = digests[t.name]
        config = dict(plan.donor.config)
        (Path(tmp) / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        atomic_write_json(Path(tmp) / MANIFEST, manifest.as_dict())
        (Path(tmp) / "README.md").write_text(model_card(manifest), encoding="utf-8")
    return manifest


def model_card(m: Manifest) -> str:
    """The pack's short README.md."""
    size = sum(_numel(t.shape) for t in m.tensors)
    lines = [
        f"# SfN module pack ({m.kind})", "",
        f"Modules `{m.modules}` of layers `{m.layers}` of **{m.tuned_model}**"
        + (f" (revision {m.tuned_revision})" if m.tuned_revision else "")
        + f", to be applied to **{m.base_model}**" + (f" (revision {m.base_revision})" if m.base_revision else "")
        + f" ({m.architecture}, {m.num_layers} layers).", "",
        f"{len(m.tensors)} tensors, {size:,} values, dtype {m.dtype}. Written by SfN {m.sfn_version}.", "",
        "    sfn pack info THIS_FOLDER", "    sfn pack apply BASE THIS_FOLDER -o merged/", "",
        "`apply` checks every base tensor against the SHA-256 in `manifest.json` before writing anything.",
    ]
    lines += [f"- {n}" for n in m.notes]
    return "\n".join(lines) + "\n"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
