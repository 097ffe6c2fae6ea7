"""The pack manifest: what a pack holds, where it came from, and the checksums that make ``apply`` safe.

Checksums are SHA-256 of a tensor's raw bytes as stored (safetensors, little-endian, its own dtype): the
base tensors a pack expects (``base_sha256``; a tied head is the embedding's bytes) and the pack's own
tensors (``sha256``). A pack is checked against its own tensors on every read, and against a base before
anything is written from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from sfn_merge_plugin.errors import SfnError

FORMAT = "sfn-pack/1"  # the manifest's format tag; a reader refuses other tags
MANIFEST = "manifest.json"  # file names inside a pack folder
WEIGHTS = "model.safetensors"  # exact pack: the fine-tune's values under the base's tensor names
ADAPTER_CONFIG = "adapter_config.json"  # LoRA pack: PEFT's files
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HASH_CHUNK = 16 << 20  # bytes read per step while hashing (memory stays flat)


class PackError(SfnError):
    """A pack that cannot be used as given (wrong base, damaged file, manifest that does not match)."""


@dataclass
class PackTensor:
    """One tensor of an exact pack, or one module of a LoRA pack."""

    name: str  # tensor name in the base checkpoint ("lm_head.weight" also for a tied base's head)
    layer: Optional[int]  # decoder layer, None for model-level tensors
    kinds: list  # canonical module kinds (the selected blocks' kinds for fused tensors)
    shape: list  # shape of the base tensor
    dtype: str  # safetensors dtype of the base tensor (and of the pack's values)
    base_sha256: str  # SHA-256 of the base tensor's stored bytes the pack expects
    sha256: Optional[str] = None  # SHA-256 of the pack's own stored tensor (exact packs)
    blocks: list = field(default_factory=list)  # [[kind, dim, start, stop], ...] for fused tensors: only these move
    rank: Optional[int] = None  # LoRA packs: rank kept for this module
    kept_energy: Optional[float] = None  # LoRA packs: share of ||delta||_F^2 kept by the rank


@dataclass
class Manifest:
    """Everything ``apply`` and ``info`` need, written as manifest.json."""

    kind: str  # "exact" or "lora"
    modules: str  # the module selector, as given
    layers: str  # the layer selector, as given
    architecture: str  # the base's architecture (one name from config.json)
    num_layers: int
    base_model: str  # where the base came from (path or hub id)
    base_revision: Optional[str]  # hub revision, None for a local folder
    tuned_model: str  # the fine-tune the values came from
    tuned_revision: Optional[str]
    dtype: str  # safetensors dtype of the pack's tensors
    untie: bool  # applying writes lm_head on its own and sets tie_word_embeddings: false
    tensors: list  # PackTensor, in base order
    sfn_version: str
    notes: list = field(default_factory=list)  # what the selection implies (untying...), for people
    format: str = FORMAT

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def by_name(self) -> dict:
        return {t.name: t for t in self.tensors}

    @classmethod
    def from_dict(cls, doc: dict, where: str) -> "Manifest":
        if doc.get("format") != FORMAT:
            raise PackError(f"{where}: manifest format {doc.get('format')!r} is not {FORMAT!r}; this SfN reads {FORMAT} packs")
        try:
            tensors = [PackTensor(**t) for t in doc["tensors"]]
            return cls(**{**doc, "tensors": tensors})
        except (KeyError, TypeError) as exc:
            raise PackError(f"{where}: manifest.json is malformed ({exc}); re-extract the pack") from None


def read_manifest(pack) -> Manifest:
    path = Path(pack) / MANIFEST
    if not path.is_file():
        raise PackError(f"{pack}: no {MANIFEST}; is this an SfN pack folder (written by `sfn pack extract`)?")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackError(f"{path}: cannot read it ({exc}); re-extract the pack") from None
    return Manifest.from_dict(doc, str(path))


def pack_kind(pack) -> str:
    """"exact", "lora" (an SfN LoRA pack or any PEFT LoRA adapter folder), else a PackError."""
    p = Path(pack)
    if not p.is_dir():
        raise PackError(f"{pack}: no such folder; a pack is the folder `sfn pack extract` writes (or a PEFT adapter folder)")
    if (p / ADAPTER_CONFIG).is_file():
        return "lora"
    if (p / MANIFEST).is_file():
        return read_manifest(p).kind
    raise PackError(f"{pack}: neither {MANIFEST} (an SfN pack) nor {ADAPTER_CONFIG} (a PEFT adapter) is here")


def sfn_version() -> str:
    from sfn_merge_plugin import __version__

    return __version__


# ---------------------------------------------------------------------------------------------- checksums


def header_of(file) -> tuple:
    """(header without __metadata__, metadata, byte offset of the data section) of a safetensors file."""
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise PackError(f"{file}: not a readable safetensors file ({exc}); it may be truncated: copy or extract it again") from None
    meta = header.pop("__metadata__", None) or {}
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise PackError(f"{file}: truncated ({size} bytes, its header needs {8 + n + end}); copy or extract it again")
    return header, meta, 8 + n


def sha256_range(file, start: int, stop: int) -> str:
    """SHA-256 of bytes ``start:stop`` of a file, read in bounded chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        f.seek(start)
        left = stop - start
        while left > 0:
            buf = f.read(min(HASH_CHUNK, left))
            if not buf:
                raise PackError(f"{file}: truncated (ended {left} bytes early); copy or extract it again")
            h.update(buf)
            left -= len(buf)
    return h.hexdigest()


def stored_sha256(entry) -> str:
    """SHA-256 of a checkpoint tensor's stored bytes (``checkpoint.TensorEntry``), without loading it whole."""
    header, _, data = _cached_header(entry.file)
    begin, end = header[entry.name]["data_offsets"]
    return sha256_range(entry.file, data + begin, data + end)


def tensor_sha256(t) -> str:
    """SHA-256 of an in-memory tensor's bytes (CPU, contiguous): equals ``stored_sha256`` of the same values."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return hashlib.sha256(b"").hexdigest()
    import torch

    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().data).hexdigest()


_HEADERS: dict = {}


def _cached_header(file):
    key = (file, os.path.getmtime(file), os.path.getsize(file))
    if key not in _HEADERS:
        _HEADERS.clear() if len(_HEADERS) > 64 else None
        _HEADERS[key] = header_of(file)
    return _HEADERS[key]
