"""Safetensors I/O without hidden copies: read without a memory map, write without serialising to bytes.

A memory-mapped shard counts every page touched in the process's RSS until it is closed, so a merge
that walks a 1 GB shard ends up "using" 1 GB. Reading each tensor into its own buffer keeps memory to
the tensors actually alive (the OS page cache still serves repeated reads). Writing streams each
tensor's own memory to the file, where ``safetensors.torch.save_file`` first copies every tensor to bytes;
a tensor unchanged since it was read is copied from its file in the kernel instead (``StoredRange``), and
a lazy reader (``StoredTensor``) does not read such a tensor at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from sfn_merge_plugin.pread import read_into

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class StoredRange:
    """Where a tensor read by ``SafetensorsReader.get_tensor`` is stored, to copy it without re-encoding."""

    path: str  # the safetensors file
    start: int  # absolute byte offset of the tensor's data
    size: int  # bytes
    dtype: str  # safetensors dtype name
    shape: tuple  # as stored
    version: int  # the tensor's in-place version counter when read: a later in-place edit voids the range


COPY_STORED = os.environ.get("SFN_NO_RAW_COPY") != "1"  # benchmarks/merge_bench.py measures with and without


def stored_range(t: torch.Tensor):
    """The file range holding ``t``'s exact bytes, if ``t`` is a tensor read whole and not modified since."""
    r = getattr(t, "_sfn_stored", None)
    if isinstance(t, StoredTensor):
        return r if COPY_STORED and t.unchanged() else None
    if r is None or not COPY_STORED or t._version != r.version or t.device.type != "cpu" or _DTYPE_NAMES.get(t.dtype) != r.dtype \
            or tuple(t.shape) != r.shape:
        return None
    return r


def copy_bytes(src_fd: int, src_start: int, dst_fd: int, n: int) -> None:
    """Copy ``n`` bytes from offset ``src_start`` of ``src_fd`` to the current position of ``dst_fd``, in the
    kernel where possible (``copy_file_range``), else with bounded positioned reads."""
    left, pos = n, src_start
    fast = hasattr(os, "copy_file_range")
    while left > 0:
        k = 0
        if fast:
            try:
                k = os.copy_file_range(src_fd, dst_fd, min(left, 1 << 30), pos)
            except OSError:
                fast = False
                continue
        else:
            buf = os.pread(src_fd, min(left, 16 << 20), pos)
            if buf:
                _write_all(dst_fd, buf)
                k = len(buf)
        if k <= 0:
            raise OSError(f"source ended {left} bytes early (truncated file)")
        left -= k
        pos += k


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view):]


class StoredTensor(torch.Tensor):
    """A tensor still in its file (``SafetensorsReader(path, lazy=True)``): shape and dtype without the data.

    Any torch operation on it first reads the data (``materialize``) and runs on that, so code that computes
    on it sees the real values; a writer given it unread and unmodified copies its stored bytes instead
    (``stored_range``), so a tensor a merge keeps unchanged is never in memory."""

    @staticmethod
    def __new__(cls, reader: "SafetensorsReader", name: str, stored: StoredRange):
        t = torch.Tensor._make_wrapper_subclass(cls, stored.shape, dtype=DTYPES[stored.dtype], device="cpu",
                                                requires_grad=False)
        t._sfn_reader, t._sfn_name, t._sfn_stored = reader, name, stored
        t._sfn_value, t._sfn_value_version, t._sfn_written = None, 0, False
        return t

    def materialize(self) -> torch.Tensor:
        """The data, read once into a plain tensor (later operations on this tensor use it)."""
        if self._sfn_value is None:
            meta = self._sfn_reader._header[self._sfn_name]
            self._sfn_value = self._sfn_reader._read(self._sfn_name, meta["shape"], *meta["data_offsets"])
            self._sfn_value_version = self._sfn_value._version
        return self._sfn_value

    def unchanged(self) -> bool:
        """Nothing was written into it: no in-place op on it (its version, or the flag set by dispatch) nor on
        its read data or a view of that data (their shared version)."""
        value = self._sfn_value
        return (not self._sfn_written and self._version == self._sfn_stored.version
                and (value is None or value._version == self._sfn_value_version))

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten, tree_map

        if func._schema.is_mutable:  # an in-place / out= op: whatever stored tensor it was given is no longer as stored
            for x in tree_flatten((args, kwargs))[0]:
                if isinstance(x, StoredTensor):
                    x._sfn_written = True
        real = lambda x: x.materialize() if isinstance(x, StoredTensor) else x  # noqa: E731
        return func(*tree_map(real, args), **tree_map(real, kwargs or {}))

    def __repr__(self):
        return f"StoredTensor({self._sfn_name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"


class SafetensorsReader:
    """``keys()`` / ``get_tensor(name)`` like ``safetensors.safe_open``, without mmap. With ``lazy=True``
    ``get_tensor`` reads nothing: it returns a ``StoredTensor`` that reads its data on first use."""

    def __init__(self, path: str, lazy: bool = False):
        self.path = path
        self.lazy = lazy
        self._file = open(path, "rb")
        n = int.from_bytes(self._file.read(8), "little")
        header = json.loads(self._file.read(n))
        header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + n
        self._fd = self._file.fileno()

    def keys(self):
        return self._header.keys()  # a view: mergekit tests membership once per tensor

    def get_tensor(self, name: str) -> torch.Tensor:
        meta = self._header[name]
        begin, end = meta["data_offsets"]
        if self.lazy:
            return StoredTensor(self, name, StoredRange(self.path, self._data_start + begin, end - begin, meta["dtype"],
                                                        tuple(meta["shape"]), 0))
        t = self._read(name, meta["shape"], begin, end)
        # where these bytes are stored: a writer given this tensor unmodified copies the range instead
        t._sfn_stored = StoredRange(self.path, self._data_start + begin, end - begin, meta["dtype"], tuple(meta["shape"]), t._version)
        return t

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of a tensor (along its first axis; a 1-D tensor's elements), read with one
        positioned read into their own buffer: thread-safe, no memory map, no seek."""
        meta = self._header[name]
        shape = list(meta["shape"])
        begin, end = meta["data_offsets"]
        rows = shape[0] if shape else 1
        row_bytes = (end - begin) // rows if rows else 0
        start, stop = max(0, min(start, rows)), max(0, min(stop, rows))
        stop = max(start, stop)
        if shape:
            shape[0] = stop - start
        return self._read(name, shape, begin + start * row_bytes, begin + stop * row_bytes)

    def _read(self, name: str, shape, begin: int, end: int) -> torch.Tensor:
        dtype = DTYPES[self._header[name]["dtype"]]
        n = end - begin
        out = torch.empty(n // max(1, torch.empty((), dtype=dtype).element_size()), dtype=dtype)
        if n:
            if self._file.closed:  # a StoredTensor read after its reader was closed
                self._file = open(self.path, "rb")
                self._fd = self._file.fileno()
            got = read_into(self._fd, memoryview(out.view(torch.uint8).numpy()), self._data_start + begin)
            if got < n:
                raise OSError(f"{self.path}: truncated tensor {name} ({got} of {n} bytes)")
        return out.reshape(shape)

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._file.close()
        except Exception:
            pass


_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def write_safetensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write ``{name: tensor}`` as a safetensors file, streaming each tensor's memory (no byte copies);
    a tensor unchanged from a file is copied from it in the kernel, neighbours there in one copy."""
    header, offset, segments = {}, 0, []  # segments: [path, start, size] (a stored range) or a uint8 array
    for name, t in tensors.items():
        stored = stored_range(t)  # unchanged from a file: its bytes are copied, not re-encoded
        if stored is not None:
            n = stored.size
            header[name] = {"dtype": stored.dtype, "shape": list(stored.shape), "data_offsets": [offset, offset + n]}
            last = segments[-1] if segments else None
            if isinstance(last, list) and last[0] == stored.path and last[1] + last[2] == stored.start:
                last[2] += n  # stored right after the previous one: one copy for both
            else:
                segments.append([stored.path, stored.start, n])
            offset += n
            continue
        if isinstance(t, StoredTensor):
            t = t.materialize()
        t = t.detach().to("cpu").contiguous()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        if n:
            segments.append(t.reshape(-1).view(torch.uint8).numpy())
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        handles = {}
        try:
            for seg in segments:
                if isinstance(seg, list):
                    f.flush()
                    src = handles.get(seg[0]) or handles.setdefault(seg[0], open(seg[0], "rb"))
                    copy_bytes(src.fileno(), seg[1], f.fileno(), seg[2])
                else:
                    f.write(memoryview(seg))
        finally:
            for h in handles.values():
                h.close()
