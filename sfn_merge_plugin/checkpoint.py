"""Find a checkpoint and read what it holds (config, tensor names, shapes, dtypes) without loading weights."""

from __future__ import annotations

from sfn_merge_plugin.errors import CheckpointError  # noqa: F401  (re-exported)

import json
import os
from dataclasses import dataclass
from pathlib import Path




@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: str  # absolute path of the shard
    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Checkpoint:
    path: str
    config: dict
    tensors: dict  # name -> TensorEntry, in file order

    @property
    def names(self) -> list:
        return list(self.tensors)


def split_revision(ref: str) -> tuple:
    """"org/name@rev" -> ("org/name", "rev"); a local path is never split."""
    ref = str(ref)
    if "@" in ref and not Path(os.path.expanduser(ref)).exists():
        repo, _, rev = ref.rpartition("@")
        return repo, rev or None
    return ref, None


def _looks_like_hub(ref: str) -> bool:
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))


def resolve_path(ref: str, allow_download: bool = True) -> str:
    """A local folder as is; otherwise a hub id ("org/name[@revision]") fetched into the HF cache
    (configs, tokenizer and safetensors only: never pickles or other files)."""
    ref, revision = split_revision(ref)
    p = Path(os.path.expanduser(str(ref)))
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{ref}: is a file; give the model's folder (the one holding config.json)")
        return str(p.resolve())
    if not _looks_like_hub(str(ref)) or not allow_download:
        raise CheckpointError(f"{ref}: no such folder (and not a hub id of the form 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            str(ref), revision=revision,
            allow_patterns=["*.json", "model*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as exc:
        raise CheckpointError(
            f"{ref}: not a local folder, and fetching it from the hub failed ({type(exc).__name__}: {exc}). "
            "Offline? Download the model elsewhere and pass its folder."
        ) from None


def read_config(path: str) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path}: no config.json here; is this a Hugging Face model folder?")
    with open(cfg, encoding="utf-8") as f:
        return json.load(f)


def _safetensors_header(file: str) -> dict:
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def safetensors_files(path: str) -> list:
    d = Path(path)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        files = []
        for shard in weight_map.values():
            if shard not in files:
                files.append(shard)
        return [str(d / s) for s in files]
    single = d / "model.safetensors"
    return [str(single)] if single.is_file() else []


def _open_hub_headers(ref: str) -> Checkpoint:
    """Config and safetensors headers of a hub repo, fetched with range requests (no weights downloaded)."""
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    repo, revision = split_revision(ref)
    try:
        with open(hf_hub_download(repo, "config.json", revision=revision), encoding="utf-8") as f:
            config = json.load(f)
        meta = get_safetensors_metadata(repo, revision=revision)
    except Exception as exc:
        raise CheckpointError(
            f"{ref}: not a local folder, and reading it from the hub failed ({type(exc).__name__}: {exc}). "
            "Offline? Download the model elsewhere and pass its folder."
        ) from None
    tensors = {}
    for file, file_meta in meta.files_metadata.items():
        for name, info in file_meta.tensors.items():
            tensors[name] = TensorEntry(name, file, info.dtype, tuple(info.shape))
    return Checkpoint(str(ref), config, tensors)


def open_checkpoint(ref: str, allow_bin: bool = False, headers_only: bool = False) -> Checkpoint:
    """Read config and safetensors headers (a few KB) of a local folder or hub id. With ``headers_only``
    a hub model is not downloaded (its ``TensorEntry.file`` is then the file name in the repo)."""
    name, _ = split_revision(ref)
    if headers_only and not Path(os.path.expanduser(name)).exists() and _looks_like_hub(name):
        return _open_hub_headers(ref)
    path = resolve_path(ref)
    config = read_config(path)
    files = safetensors_files(path)
    if not files:
        bins = sorted(p.name for p in Path(path).glob("pytorch_model*.bin"))
        if bins and not allow_bin:
            raise CheckpointError(
                f"{ref}: holds only PyTorch .bin weights ({', '.join(bins[:3])}); they are pickles and can run "
                "code when loaded, so SfN does not read them by default. Convert them to safetensors "
                "(e.g. load with transformers and save_pretrained); `sfn delta` also accepts --allow-bin, "
                "which reads them with torch.load(weights_only=True)."
            )
        if bins:
            return _open_bin(path, config, bins)
        raise CheckpointError(f"{ref}: has config.json but no model.safetensors[.index.json] weights")
    tensors = {}
    for file in files:
        for name, meta in _safetensors_header(file).items():
            tensors[name] = TensorEntry(name, file, meta["dtype"], tuple(meta["shape"]))
    return Checkpoint(path, config, tensors)


def _open_bin(path: str, config: dict, bins: list) -> Checkpoint:
    import torch

    tensors = {}
    for b in bins:
        file = str(Path(path) / b)
        sd = torch.load(file, map_location="meta", weights_only=True)
        for name, t in sd.items():
            tensors[name] = TensorEntry(name, file, str(t.dtype).replace("torch.", ""), tuple(t.shape))
    return Checkpoint(path, config, tensors)


def layout_of(ckpt: Checkpoint):
    """The taxonomy's view of a checkpoint (imports nothing heavy)."""
    from sfn_merge_plugin.taxonomy import layout_from_names

    return layout_from_names(ckpt.config, ckpt.names)
