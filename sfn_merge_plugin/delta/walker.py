"""Walk a base and its fine-tune in lockstep, tensor by tensor, in row chunks of bounded size.

Peak memory does not grow with the model: each chunk is read with one positioned read (``os.preadv``)
into its own buffer, no memory map (one safetensors handle kept open for a whole 1 GiB tensor grew
RSS by ~2 GB of mapped pages; reopening per chunk kept it flat but parsed the header every time).
``.bin`` checkpoints are read only when the caller opts in, with ``torch.load(weights_only=True, mmap=True)``.

    plan = plan_pair(base, tuned)                   # pairing.py: checks, before any read
    for chunk in iter_chunks(plan):                 # Chunk(unit, base, tuned, last)
        ...                                         # chunk.base / chunk.tuned: 2-D numpy arrays, stored dtype
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from sfn_merge_plugin.delta.pairing import PairPlan, Unit, as_2d, itemsize
from sfn_merge_plugin.pread import read_into

DEFAULT_CHUNK_BYTES = 8 << 20  # per model and chunk: small enough for flat memory, few enough file opens


@dataclass
class Chunk:
    """Rows ``start:stop`` of one unit, from both models (2-D views in the stored dtype)."""

    unit: Unit
    start: int
    stop: int
    base: np.ndarray  # stored dtype (bf16 as stats.BF16)
    tuned: np.ndarray
    last: bool  # the unit's final chunk

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self.tuned.nbytes


class BinReader:
    """Tensors of ``.bin`` checkpoints (opt-in): torch.load(weights_only=True), memory-mapped, keeping
    the last file open (use one reader per model)."""

    def __init__(self):
        self.file, self.state = None, None

    def tensor(self, entry):
        import torch

        if self.file != entry.file:
            self.state = None
            try:
                self.state = torch.load(entry.file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped: load this shard whole
                self.state = torch.load(entry.file, map_location="cpu", weights_only=True)
            self.file = entry.file
        return self.state[entry.name]


_NP_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


class _Shard:
    """A safetensors file kept open: its header (parsed once) and a descriptor for positioned reads."""

    def __init__(self, path: str):
        import json

        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            n = int.from_bytes(os.pread(self.fd, 8, 0), "little")
            self.header = json.loads(os.pread(self.fd, n, 8))
        except BaseException:
            os.close(self.fd)
            raise
        self.header.pop("__metadata__", None)
        self.data_start = 8 + n

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (first axis; a 1-D tensor's elements) as a numpy array in the stored dtype
        (:data:`~sfn_merge_plugin.delta.stats.BF16` for bf16), read by one ``os.preadv`` into its own buffer."""
        from sfn_merge_plugin.delta.stats import BF16

        meta = self.header[name]
        shape = list(meta["shape"])
        begin, end = meta["data_offsets"]
        dtype = BF16 if meta["dtype"] == "BF16" else np.dtype(_NP_DTYPES[meta["dtype"]])
        total_rows = shape[0] if shape else 1
        row_bytes = (end - begin) // max(1, total_rows)
        if shape:
            shape[0] = stop - start
        nbytes = (stop - start) * row_bytes
        out = np.empty(nbytes // dtype.itemsize, dtype=dtype)
        if read_into(self.fd, memoryview(out.view(np.uint8)), self.data_start + begin + start * row_bytes) < nbytes:
            raise OSError(f"{self.path}: truncated tensor {name}")
        return out.reshape(shape)

    def close(self):
        os.close(self.fd)


class ShardReaders:
    """One open safetensors shard per file (header parsed once), closed together."""

    def __init__(self):
        self.readers = {}

    def get(self, path: str) -> _Shard:
        reader = self.readers.get(path)
        if reader is None:
            reader = self.readers[path] = _Shard(path)
        return reader

    def close(self):
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()


def read_rows(entry, start: int, stop: int, bin_reader: Optional[BinReader] = None,
              shards: Optional[ShardReaders] = None):
    """Rows ``start:stop`` of one tensor as a 2-D numpy array in its stored dtype (bf16 as
    :data:`~sfn_merge_plugin.delta.stats.BF16`; 1-D tensors are one row). ``bin_reader`` is needed for
    ``.bin`` files only; ``shards`` keeps safetensors files open between calls."""
    shape = tuple(entry.shape)
    if entry.file.endswith(".safetensors"):
        own = shards is None
        shards = ShardReaders() if own else shards
        try:
            t = shards.get(entry.file).rows(entry.name, start, stop) if len(shape) > 1 else \
                shards.get(entry.file).rows(entry.name, 0, shape[0] if shape else 1)
        finally:
            if own:
                shards.close()
    else:
        from sfn_merge_plugin.delta.stats import as_array

        if bin_reader is None:
            raise ValueError(f"{entry.file}: reading .bin weights needs a BinReader")
        whole = bin_reader.tensor(entry)
        t = as_array(whole[start:stop] if len(shape) > 1 else whole)
    return t if len(shape) == 2 else t.reshape(-1, as_2d(shape)[1])


def rows_per_chunk(unit: Unit, chunk_bytes: int) -> int:
    """How many rows of a unit fit in ``chunk_bytes`` (in the larger of the two stored dtypes); at least 1."""
    row_bytes = (unit.cols[1] - unit.cols[0]) * max(itemsize(unit.base.dtype), itemsize(unit.tuned.dtype))
    return max(1, int(chunk_bytes) // max(1, row_bytes))


def iter_chunks(plan: PairPlan, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress=None) -> Iterator[Chunk]:
    """Every unit of ``plan`` in order, as row chunks of both models (at most ``chunk_bytes`` per model,
    at least one row). ``progress``: a tqdm-like object whose ``update(n)`` gets the bytes handed out.

    A fused tensor split along columns (GPT-2 ``c_attn``) is read once per row chunk and handed out as
    one column view per block."""
    shards = ShardReaders()
    try:
        yield from _walk(plan, chunk_bytes, progress, shards)
    finally:
        shards.close()


def _walk(plan: PairPlan, chunk_bytes: int, progress, shards: ShardReaders) -> Iterator[Chunk]:
    base_bins, tuned_bins = BinReader(), BinReader()
    units = list(plan.units)
    i = 0
    while i < len(units):
        unit = units[i]
        # units that share a tensor and row range but split columns are read together
        group = [unit]
        while (i + len(group) < len(units) and units[i + len(group)].tensor == unit.tensor
               and units[i + len(group)].rows == unit.rows and units[i + len(group)].base is unit.base
               and units[i + len(group)].tuned is unit.tuned):
            group.append(units[i + len(group)])
        r0, r1 = unit.rows
        c_lo, c_hi = min(u.cols[0] for u in group), max(u.cols[1] for u in group)
        step = max(1, rows_per_chunk(unit, chunk_bytes) * (unit.cols[1] - unit.cols[0]) // max(1, c_hi - c_lo))
        for start in range(r0, r1, step):
            stop = min(r1, start + step)
            a = read_rows(unit.base, start, stop, base_bins, shards)
            b = read_rows(unit.tuned, start, stop, tuned_bins, shards)
            for u in group:
                ca, cb = u.cols
                full = (ca, cb) == (0, a.shape[1])
                chunk = Chunk(u, start, stop, a if full else a[:, ca:cb], b if full else b[:, ca:cb], stop == r1)
                if progress is not None:
                    progress.update(chunk.nbytes)
                yield chunk
        i += len(group)
