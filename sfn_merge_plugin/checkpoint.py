"""Find a checkpoint and read what it holds (config, tensor names, shapes, dtypes) without loading weights."""

from __future__ import annotations

from sfn_merge_plugin.errors import CheckpointError  # noqa: F401  (re-exported)

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional




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


def _not_found(ref: str, why: str) -> CheckpointError:
    where = "" if os.path.isabs(os.path.expanduser(ref)) else f" (relative paths resolve against the current folder, {os.getcwd()})"
    return CheckpointError(f"{ref}: no such folder{where}; {why}")


def hub_offline_reason() -> Optional[str]:
    """Why the hub cannot be used now (HF_HUB_OFFLINE set, or no connection within 3 s), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set, so it is not fetched from the hub"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as exc:
        return f"the hub ({endpoint.hostname}) cannot be reached ({exc.strerror or exc}), so it is not fetched"
    return None


def resolve_path(ref: str, allow_download: bool = True) -> str:
    """A local folder as is; otherwise a hub id ("org/name[@revision]") fetched into the HF cache
    (configs, tokenizer and safetensors only: never pickles or other files). Offline, one line at once."""
    ref, revision = split_revision(ref)
    p = Path(os.path.expanduser(str(ref)))
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{ref}: is a file; give the model's folder (the one holding config.json)")
        return str(p.resolve())
    if not _looks_like_hub(str(ref)) or not allow_download:
        raise _not_found(str(ref), "and not a hub id of the form 'org/name'")
    offline = hub_offline_reason()
    if offline:
        raise _not_found(str(ref), f"as a hub id, {offline}. Download the model elsewhere and pass its folder")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            str(ref), revision=revision,
            allow_patterns=["*.json", "model*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as exc:
        raise CheckpointError(
            f"{ref}: not a local folder, and fetching it from the hub failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Offline? Download the model elsewhere and pass its folder."
        ) from None


def _read_json(file, what: str):
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: {what} is not valid JSON (line {exc.lineno}: {exc.msg}); restore it from the original model") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: {what} is not UTF-8 text; restore it from the original model") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read {what} ({exc.strerror})") from None


def read_config(path: str) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path}: no config.json here; is this a Hugging Face model folder?")
    config = _read_json(cfg, "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg}: config.json holds a {type(config).__name__}, not a mapping of settings")
    return config


# safetensors dtype -> bytes per element
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}


def _safetensors_header(file: str) -> dict:
    """The tensor entries of a safetensors file, checked against the file's size: a zero-byte or truncated
    file, a header length past the end, or data_offsets outside the data are a ``CheckpointError``."""
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as f:
            head = f.read(8)
            if size < 8 or len(head) < 8:
                raise CheckpointError(f"{file}: {'empty (0 bytes)' if size == 0 else f'only {size} bytes'}, not a safetensors file; "
                                      "the download or copy was cut short: fetch it again")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise CheckpointError(f"{file}: its header says {n} bytes but the file holds {size}; the file is truncated "
                                      "or not safetensors: fetch it again")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read it ({exc.strerror})") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{file}: the safetensors header is not valid JSON; the file is damaged: fetch it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: the safetensors header is not a mapping; the file is damaged: fetch it again")
    header.pop("__metadata__", None)
    data = size - 8 - n
    for name, meta in header.items():
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry {meta!r:.120}; the file is damaged") from None
        numel = 1
        for d in shape:
            numel *= d
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data):
            raise CheckpointError(f"{file}: tensor {name!r} lies at bytes {begin}-{end} but the file holds {data} bytes of data; "
                                  "the file is truncated or damaged: fetch it again")
        if dtype in _ITEMSIZE and end - begin != numel * _ITEMSIZE[dtype]:
            raise CheckpointError(f"{file}: tensor {name!r} ({dtype}, shape {list(shape)}) needs {numel * _ITEMSIZE[dtype]} bytes "
                                  f"but its data_offsets span {end - begin}; the file is damaged")
    return header


def _weight_map(index: Path) -> dict:
    doc = _read_json(index, index.name)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: has no \"weight_map\" (tensor name -> shard file); restore it from the original model")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{index}: weight_map[{name!r}] is {shard!r}, not a shard file name")
    return weight_map


def safetensors_files(path: str) -> list:
    d = Path(path)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        files = []
        for shard in _weight_map(index).values():
            if shard not in files:
                files.append(shard)
        for shard in files:
            if not (d / shard).is_file():
                raise CheckpointError(f"{d}: the index names the shard {shard}, which is missing; fetch it again")
        return [str(d / s) for s in files]
    single = d / "model.safetensors"
    return [str(single)] if single.is_file() else []


def check_promised_tensors(ckpt: "Checkpoint", index_map: Optional[dict] = None, same_layers: bool = True) -> None:
    """Every tensor the index lists is in its shard, and (``same_layers``) every layer holds the same
    tensors (the architecture's promise); else a ``CheckpointError`` naming the first missing tensor.
    A tensor kind that one checkpoint has in every layer and another lacks in every layer is no damage:
    ``sfn delta`` reports it as missing or extra."""
    import re

    for name, shard in (index_map or {}).items():
        entry = ckpt.tensors.get(name)
        if entry is None or Path(entry.file).name != Path(shard).name:
            raise CheckpointError(f"{ckpt.path}: tensor {name!r} is listed in the index (in {shard}) but missing from "
                                  f"that shard; the checkpoint is incomplete: fetch it again")
    if not same_layers:
        return
    per_layer = {}
    pattern = re.compile(r"^(.*\.layers\.)(\d+)\.(.+)$")
    for name in ckpt.tensors:
        m = pattern.match(name)
        if m:
            per_layer.setdefault(int(m.group(2)), set()).add((m.group(1), m.group(3)))
    if not per_layer:
        return
    depth = ckpt.config.get("num_hidden_layers", ckpt.config.get("n_layer"))
    layers = range(depth) if isinstance(depth, int) and depth > 0 else sorted(per_layer)
    union = set().union(*per_layer.values())
    for layer in layers:
        missing = sorted(union - per_layer.get(layer, set()))
        if missing:
            prefix, rest = missing[0]
            raise CheckpointError(f"{ckpt.path}: tensor {prefix}{layer}.{rest!s} is missing (the other layers have it"
                                  f"{'' if len(missing) == 1 else f'; {len(missing)} tensors of layer {layer} are missing'}); "
                                  "the checkpoint is incomplete: fetch it again")


def _open_hub_headers(ref: str) -> Checkpoint:
    """Config and safetensors headers of a hub repo, fetched with range requests (no weights downloaded)."""
    from huggingface_hub import get_safetensors_metadata, hf_hub_download

    repo, revision = split_revision(ref)
    offline = hub_offline_reason()
    if offline:
        raise _not_found(str(repo), f"as a hub id, {offline}. Download the model elsewhere and pass its folder")
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


def open_checkpoint(ref: str, allow_bin: bool = False, headers_only: bool = False,
                    same_layers: bool = True) -> Checkpoint:
    """Read config and safetensors headers (a few KB) of a local folder or hub id. With ``headers_only``
    a hub model is not downloaded (its ``TensorEntry.file`` is then the file name in the repo);
    ``same_layers`` is passed to ``check_promised_tensors``."""
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
    ckpt = Checkpoint(path, config, tensors)
    index = Path(path) / "model.safetensors.index.json"
    check_promised_tensors(ckpt, _weight_map(index) if index.is_file() else None, same_layers=same_layers)
    return ckpt


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
