"""Write a base checkpoint with some tensors replaced: its shards are copied as bytes and the replaced
ranges overwritten (same dtype and shape, so the header stays the same); a tied head that must be written
on its own is appended to the embedding's shard, whose header then grows by one entry.

Peak memory is one copy chunk (or one replaced tensor given as bytes), whatever the model size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sfn_merge_plugin.packs.manifest import header_of
from sfn_merge_plugin.packs.rawio import copy_file, copy_range, encode_header, patch_ranges

WEIGHT_FILES = ("model.safetensors.index.json",)  # besides *.safetensors: not copied, rewritten
SKIP_FILES = ("sfn_provenance.json", ".sfn-output", "README.md")  # SfN's own records: the output gets new ones


@dataclass(frozen=True)
class Source:
    """New stored bytes for one tensor: a byte range of a file, or bytes in memory."""

    file: Optional[str] = None
    start: int = 0
    size: int = 0
    data: Optional[bytes] = None

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else self.size


def copy_side_files(base_dir: str, out_dir: str) -> list:
    """config, tokenizer, generation config...: every top-level file of the base except weights and SfN records."""
    copied = []
    for p in sorted(Path(base_dir).iterdir()):
        if not p.is_file() or p.suffix in (".safetensors", ".bin", ".pt", ".pth") or p.name in WEIGHT_FILES + SKIP_FILES:
            continue
        copy_file(str(p), os.path.join(out_dir, p.name))
        copied.append(p.name)
    return copied


def write_merged(base_ckpt, layout, out_dir: str, replace: dict, untie: bool, progress: bool = True) -> list:
    """Shards of ``base_ckpt`` into ``out_dir`` with ``replace`` ({tensor name: Source}) applied; returns the
    output tensor names. A tied base's ``lm_head.weight`` in ``replace`` is appended to the embedding's shard;
    with ``untie`` the config then says ``tie_word_embeddings: false``."""
    from tqdm.auto import tqdm

    infos = layout.by_name()
    head = next((t for t in layout.tensors if t.tied_to), None)
    appended = {}
    if head is not None and head.name in replace:  # written on its own (the config is untied only with ``untie``)
        appended[base_ckpt.tensors[head.tied_to].file] = (head.name, replace[head.name])
    by_file = {}
    for name, src in replace.items():
        if head is not None and name == head.name:
            continue
        e = base_ckpt.tensors[infos[name].tied_to or name]
        by_file.setdefault(e.file, []).append((e.name, src))
    files = list(dict.fromkeys(e.file for e in base_ckpt.tensors.values()))
    names = []
    index_extra = {}
    for file in tqdm(files, desc="write", unit="shard", disable=not progress or len(files) < 2, leave=False):
        dst = os.path.join(out_dir, os.path.basename(file))
        header, meta, data = header_of(file)
        names += list(header)
        if file in appended:
            hname, hsrc = appended[file]
            end = max((v["data_offsets"][1] for v in header.values()), default=0)
            emb = header[head.tied_to]
            new_header = dict(header)
            new_header[hname] = {"dtype": emb["dtype"], "shape": emb["shape"], "data_offsets": [end, end + hsrc.nbytes]}
            raw = encode_header(new_header, meta)
            with open(file, "rb") as f, open(dst, "wb") as out:
                out.write(raw)
                copy_range(f, out, data, end)
                _write_source(out, hsrc)
            new_data = len(raw)
            names.append(hname)
            index_extra[hname] = os.path.basename(file)
        else:
            copy_file(file, dst)
            new_data = data
        patches = []
        for name, src in by_file.get(file, []):
            begin, end = header[name]["data_offsets"]
            if src.nbytes != end - begin:
                raise AssertionError(f"{name}: {src.nbytes} new bytes for a {end - begin}-byte tensor")
            patches.append((new_data + begin, src.data) if src.data is not None else (new_data + begin, src.file, src.start, src.size))
        patch_ranges(dst, patches)
    _write_index(base_ckpt.path, out_dir, index_extra, {n: s.nbytes for n, s in replace.items() if n in index_extra})
    if untie:
        cfg_path = os.path.join(out_dir, "config.json")
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["tie_word_embeddings"] = False
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
    return names


def _write_source(out, src: Source) -> None:
    if src.data is not None:
        out.write(src.data)
        return
    with open(src.file, "rb") as f:
        copy_range(f, out, src.start, src.size)


def _write_index(base_dir: str, out_dir: str, extra: dict, sizes: dict) -> None:
    index = Path(base_dir) / "model.safetensors.index.json"
    if not index.is_file():
        return
    doc = json.loads(index.read_text(encoding="utf-8"))
    doc.setdefault("weight_map", {}).update(extra)
    if "metadata" in doc and "total_size" in doc["metadata"]:
        doc["metadata"]["total_size"] = int(doc["metadata"]["total_size"]) + sum(sizes.values())
    with open(os.path.join(out_dir, index.name), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
