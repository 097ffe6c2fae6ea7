"""The checks every pack reader runs before it writes or changes anything: the pack against its own
manifest, and a base (a checkpoint on disk, or a loaded model) against the checksums the pack expects."""

from __future__ import annotations

from pathlib import Path

from sfn_merge_plugin.packs.manifest import WEIGHTS, Manifest, PackError, header_of, sha256_range, stored_sha256


def check_pack_tensors(pack, manifest: Manifest, weights: str = WEIGHTS) -> dict:
    """The pack file holds exactly the manifest's tensors, shapes, dtypes and bytes; returns its header."""
    file = Path(pack) / weights
    if not file.is_file():
        raise PackError(f"{pack}: {weights} is missing; copy the whole pack folder")
    header, _, data = header_of(str(file))
    want = {t.name: t for t in manifest.tensors if t.sha256 is not None}
    extra = sorted(set(header) - set(want))
    missing = sorted(set(want) - set(header))
    if extra or missing:
        what = f"has {extra[0]!r}, which the manifest does not list" if extra else f"lacks {missing[0]!r}, which the manifest lists"
        raise PackError(f"{pack}: the manifest does not match the pack's tensors: {weights} {what}; re-extract the pack")
    for name, t in want.items():
        h = header[name]
        if h["dtype"] != t.dtype or list(h["shape"]) != list(t.shape):
            raise PackError(f"{pack}: the manifest does not match the pack's tensors: {name} is {h['dtype']} "
                            f"{h['shape']} in {weights}, {t.dtype} {t.shape} in the manifest; re-extract the pack")
        begin, end = h["data_offsets"]
        if sha256_range(str(file), data + begin, data + end) != t.sha256:
            raise PackError(f"{pack}: {name} in {weights} does not match its SHA-256 in the manifest (damaged or "
                            "edited file); copy or extract the pack again")
    return header


def check_base_layout(base_ckpt, manifest: Manifest, pack) -> object:
    """Architecture, depth and every expected tensor's shape and dtype, from headers only; returns the layout."""
    from sfn_merge_plugin.checkpoint import layout_of

    layout = layout_of(base_ckpt)
    if (layout.architecture, layout.num_layers) != (manifest.architecture, manifest.num_layers):
        raise PackError(f"pack {pack} is for {manifest.architecture} with {manifest.num_layers} layers, the base "
                        f"{base_ckpt.path} is {layout.architecture} with {layout.num_layers} layers; use the pack's base "
                        f"({manifest.base_model})")
    infos = layout.by_name()
    for t in manifest.tensors:
        info = infos.get(t.name)
        if info is None:
            raise PackError(f"base {base_ckpt.path} has no tensor {t.name!r}, which pack {pack} replaces; use the pack's "
                            f"base ({manifest.base_model})")
        e = base_ckpt.tensors[info.tied_to or t.name]
        if list(e.shape) != list(t.shape) or e.dtype != t.dtype:
            raise PackError(f"base tensor {t.name} is {e.dtype} {list(e.shape)}, pack {pack} expects {t.dtype} {t.shape}; "
                            f"use the pack's base ({manifest.base_model})")
    return layout


def check_base_checksums(base_ckpt, layout, manifest: Manifest, pack, progress: bool = False) -> None:
    """Every base tensor the pack replaces has the bytes the pack was made against (first mismatch named)."""
    from tqdm.auto import tqdm

    infos = layout.by_name()
    for t in tqdm(manifest.tensors, desc="check base", unit="tensor", disable=not progress, leave=False):
        e = base_ckpt.tensors[infos[t.name].tied_to or t.name]
        if stored_sha256(e) != t.base_sha256:
            raise PackError(f"base tensor {t.name} of {base_ckpt.path} differs from the one pack {pack} was made against "
                            f"(SHA-256 mismatch); this is not the pack's base ({manifest.base_model}"
                            + (f"@{manifest.base_revision}" if manifest.base_revision else "") + "): nothing was written")


def check_model_checksums(model, layout, manifest: Manifest, pack) -> None:
    """The same check on a loaded model's parameters (their dtype must be the pack's)."""
    from sfn_merge_plugin.intervention import current_tensor
    from sfn_merge_plugin.packs.manifest import tensor_sha256
    from sfn_merge_plugin.tensor_io import DTYPES

    infos = layout.by_name()
    for t in manifest.tensors:
        if t.name not in infos:
            raise PackError(f"the loaded model has no tensor {t.name!r}, which pack {pack} replaces")
        p = current_tensor(model, layout, t.name)
        if list(p.shape) != list(t.shape):
            raise PackError(f"{t.name}: the loaded model has shape {list(p.shape)}, pack {pack} expects {t.shape}")
        if p.dtype != DTYPES[t.dtype]:
            raise PackError(f"{t.name}: the model is loaded in {p.dtype}, pack {pack} was made in {t.dtype}: load the "
                            "base in its stored dtype (dtype='auto') so the pack can be checked and applied exactly")
        if tensor_sha256(p) != t.base_sha256:
            raise PackError(f"{t.name}: the loaded model differs from the base pack {pack} was made against "
                            f"({manifest.base_model}); load that base")
