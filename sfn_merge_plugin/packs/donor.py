"""A pack folder as the donor of a ``sfn_swap`` recipe: an exact pack holds the fine-tune's config and the
selected tensors under their own names, so mergekit reads it like the fine-tune. Planning calls
``check_pack_donor`` so such a recipe also gets ``apply``'s safety check: the base must be the pack's."""

from __future__ import annotations

import os
from pathlib import Path

from sfn_merge_plugin.packs.manifest import MANIFEST, FORMAT, PackError


def is_pack(path) -> bool:
    """True for a folder holding an SfN pack manifest."""
    import json

    p = Path(os.path.expanduser(str(path))) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return True  # a damaged manifest: read_manifest reports it


def open_pack(path: str):
    """An exact pack folder as a ``checkpoint.Checkpoint`` (config + headers). Not ``open_checkpoint``: a pack
    holds only the selected layers, which that function rightly calls an incomplete checkpoint."""
    from sfn_merge_plugin.checkpoint import Checkpoint, TensorEntry, read_config
    from sfn_merge_plugin.packs.manifest import WEIGHTS, header_of

    folder = Path(os.path.expanduser(path)).resolve()
    file = folder / WEIGHTS
    if not file.is_file():
        raise PackError(f"{path}: {WEIGHTS} is missing; copy the whole pack folder")
    header, _, _ = header_of(str(file))
    tensors = {n: TensorEntry(n, str(file), h["dtype"], tuple(h["shape"])) for n, h in header.items()}
    return Checkpoint(str(folder), read_config(str(folder)), tensors)


def check_pack_donor(plan) -> None:
    """The recipe's selected tensors are in the exact pack and the base's bytes are the ones it expects."""
    from sfn_merge_plugin.checkpoint import layout_of
    from sfn_merge_plugin.packs.check import check_base_checksums, check_pack_tensors
    from sfn_merge_plugin.packs.manifest import read_manifest

    pack = plan.donor.path
    manifest = read_manifest(pack)
    if manifest.kind != "exact":
        raise PackError(f"donor {pack} is a {manifest.kind} pack; a recipe's donor must be an exact pack "
                        "(merge a LoRA pack with `sfn pack apply`)")
    check_pack_tensors(pack, manifest)
    stored = manifest.by_name
    wanted = [n for n in plan.selected if n in stored]
    manifest.tensors = [stored[n] for n in wanted]
    check_base_checksums(plan.base, layout_of(plan.base), manifest, pack)
