"""Safetensors files built from byte ranges of other files: copies without decoding a tensor.

A pack's tensors are the fine-tune's stored bytes, and an applied model is the base's shards with some
byte ranges replaced, so neither needs a tensor in memory: bytes move in bounded chunks (``CHUNK``),
hashed on the way where a checksum is wanted.
"""

from __future__ import annotations

import hashlib
import json
import os

CHUNK = 16 << 20  # bytes per read/write step: memory stays flat whatever the tensor size


def encode_header(header: dict, metadata: dict | None = None) -> bytes:
    """The 8-byte length + JSON header of a safetensors file (data section 8-byte aligned)."""
    doc = dict(header)
    if metadata:
        doc["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def copy_range(src, dst, start: int, n: int, hasher=None) -> None:
    """Copy ``n`` bytes from offset ``start`` of the open file ``src`` to the current position of ``dst``
    (in the kernel, ``tensor_io.copy_bytes``, unless the bytes must be hashed on the way)."""
    if hasher is None:
        from sfn_merge_plugin.tensor_io import copy_bytes

        dst.flush()
        copy_bytes(src.fileno(), start, dst.fileno(), n)
        dst.seek(os.lseek(dst.fileno(), 0, os.SEEK_CUR))  # the file object learns the position the kernel moved
        return
    src.seek(start)
    left = n
    while left > 0:
        buf = src.read(min(CHUNK, left))
        if not buf:
            raise OSError(f"{src.name}: ended {left} bytes early (truncated file)")
        if hasher is not None:
            hasher.update(buf)
        dst.write(buf)
        left -= len(buf)


def copy_file(src: str, dst: str) -> None:
    """A whole-file copy through the kernel (``copy_file_range``/``sendfile`` where available)."""
    import shutil

    shutil.copyfile(src, dst)


def write_from_sources(path: str, items: list, metadata: dict | None = None) -> dict:
    """Write a safetensors file whose tensors are byte ranges of other files; returns ``{name: sha256}``.

    ``items``: ``(name, dtype, shape, src_file, src_start, src_stop)`` in the order to write."""
    header, offset = {}, 0
    for name, dtype, shape, _, start, stop in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + stop - start]}
        offset += stop - start
    digests, handles = {}, {}
    try:
        with open(path, "wb") as out:
            out.write(encode_header(header, metadata))
            for name, _, _, src, start, stop in items:
                f = handles.get(src) or handles.setdefault(src, open(src, "rb"))
                h = hashlib.sha256()
                copy_range(f, out, start, stop - start, h)
                digests[name] = h.hexdigest()
    finally:
        for f in handles.values():
            f.close()
    return digests


def patch_ranges(path: str, patches: list) -> None:
    """Overwrite byte ranges of ``path`` in place: ``(offset, src_file, src_start, n)`` or ``(offset, bytes)``."""
    with open(path, "r+b") as out:
        handles = {}
        try:
            for p in patches:
                out.seek(p[0])
                if len(p) == 2:
                    out.write(p[1])
                    continue
                _, src, start, n = p
                f = handles.get(src) or handles.setdefault(src, open(src, "rb"))
                copy_range(f, out, start, n)
        finally:
            for f in handles.values():
                f.close()
