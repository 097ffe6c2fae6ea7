"""Base + pack -> a merged model folder, checked before anything is written.

Order: the output folder is checked, the pack against its manifest, the base's architecture, shapes and
dtypes (headers), then the SHA-256 of every base tensor the pack replaces; only then is the output
written (a staged folder renamed at the end). An exact pack gives the same tensors, bit for bit, as
``mergekit-yaml`` with ``sfn_swap`` for the same selection; a LoRA pack gives W + scale * B @ A.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sfn_merge_plugin.packs.manifest import WEIGHTS, PackError, header_of, pack_kind, read_manifest


@dataclass
class ApplyResult:
    """What ``apply_pack`` wrote."""

    out: str  # the output folder
    kind: str  # "exact" or "lora"
    replaced: list  # tensor names whose values came from the pack
    untied: bool  # lm_head written on its own (tie_word_embeddings: false)
    checked_base: bool  # base checksums were verified (False: a plain PEFT adapter carries none)
    notes: list = field(default_factory=list)


def apply_pack(base: str, pack: str, out: str, force: bool = False, progress: bool = True) -> ApplyResult:
    """Write ``base`` with ``pack`` applied to the folder ``out`` (see the module docstring for the order)."""
    from sfn_merge_plugin.checkpoint import open_checkpoint
    from sfn_merge_plugin.outputs import check_output_folder

    check_output_folder(out, force=force)
    kind = pack_kind(pack)
    base_ckpt = open_checkpoint(str(base))
    if kind == "exact":
        layout, replace, manifest = _exact_replacements(base_ckpt, pack, progress)
        untie, checked, notes = manifest.untie, True, list(manifest.notes)
    else:
        from sfn_merge_plugin.packs.lora_apply import lora_replacements

        layout, replace, untie, checked, notes = lora_replacements(base_ckpt, pack, progress)
    return _write(base_ckpt, layout, pack, out, replace, untie, kind, checked, notes, force, progress)


def _exact_replacements(base_ckpt, pack, progress):
    from sfn_merge_plugin.packs.check import check_base_checksums, check_base_layout, check_pack_tensors
    from sfn_merge_plugin.packs.writer import Source

    manifest = read_manifest(pack)
    check_pack_tensors(pack, manifest)
    layout = check_base_layout(base_ckpt, manifest, pack)
    check_base_checksums(base_ckpt, layout, manifest, pack, progress)
    file = str(Path(pack) / WEIGHTS)
    header, _, data = header_of(file)
    infos = layout.by_name()
    replace = {}
    for t in manifest.tensors:
        begin, end = header[t.name]["data_offsets"]
        if not t.blocks:
            replace[t.name] = Source(file=file, start=data + begin, size=end - begin)
            continue
        from sfn_merge_plugin.tensor_io import SafetensorsReader  # torch: only for fused blocks

        with SafetensorsReader(base_ckpt.tensors[infos[t.name].tied_to or t.name].file) as rb, SafetensorsReader(file) as rp:
            out = rb.get_tensor(t.name).clone()
            theirs = rp.get_tensor(t.name)
        for _, dim, start, stop in t.blocks:
            out.narrow(dim, start, stop - start).copy_(theirs.narrow(dim, start, stop - start))
        replace[t.name] = Source(data=tensor_bytes(out))
    head = next((t for t in layout.tensors if t.tied_to), None)
    if head is not None and head.name not in replace and (manifest.untie or head.tied_to in replace):
        # untied: the head keeps the base's values; still tied (embed and head from a tied fine-tune): sfn_swap
        # writes the head too, as a copy of the new embedding
        replace[head.name] = replace[head.tied_to] if not manifest.untie else _stored_range(base_ckpt.tensors[head.tied_to])
    return layout, replace, manifest


def _stored_range(entry):
    from sfn_merge_plugin.packs.writer import Source

    header, _, data = header_of(entry.file)
    begin, end = header[entry.name]["data_offsets"]
    return Source(file=entry.file, start=data + begin, size=end - begin)


def tensor_bytes(t) -> bytes:
    import torch

    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _write(base_ckpt, layout, pack, out, replace, untie, kind, checked, notes, force, progress) -> ApplyResult:
    from sfn_merge_plugin.outputs import staged_folder
    from sfn_merge_plugin.packs.writer import copy_side_files, write_merged
    from sfn_merge_plugin.provenance import write_provenance

    with staged_folder(out, "pack apply", force=force, check=False) as tmp:
        copy_side_files(base_ckpt.path, str(tmp))
        names = write_merged(base_ckpt, layout, str(tmp), replace, untie, progress)
        record = {
            "sfn_operation": f"SfN pack apply: {kind} pack {Path(pack).resolve()} applied to {base_ckpt.path}",
            "method": "sfn pack apply",
            "base_model": base_ckpt.path,
            "pack": str(Path(pack).resolve()),
            "pack_kind": kind,
            "base_checksums_verified": checked,
            "untied_lm_head": bool(untie),
            "notes": notes,
            "tensors": {n: {"source": "pack" if n in replace else "base"} for n in names},
        }
        write_provenance(str(tmp), record)
    return ApplyResult(str(out), kind, sorted(replace), bool(untie), checked, notes)
