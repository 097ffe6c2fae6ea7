"""How an SfN merge reads, schedules and writes inside mergekit 0.1.5 (installed by ``patch_merge_io``,
switched on by ``sfn_merge_io()`` around each SfN merge; other merges run mergekit's own code).

- Reads: safetensors shards without mmap, lazily (``tensor_io.StoredTensor``): a tensor is read only when
  something computes on it.
- Writes: shards streamed from each tensor's memory; a tensor unchanged from a file is a kernel byte copy
  (``tensor_io.write_safetensors``), so the output is bit-identical to re-encoding it, at the cost of a copy.
- Task graph: two per-tensor costs of mergekit's scheduler removed, and the garbage collector kept off the
  objects alive before the merge. The graph, the schedule and the bytes written are mergekit's.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import threading

_SFN_MERGE_IO = threading.local()  # .active: an SfN merge runs in this thread; .task_memo: see _patch_task_graph


def in_sfn_merge() -> bool:
    """An SfN merge is running in this thread."""
    return getattr(_SFN_MERGE_IO, "active", False)


@contextlib.contextmanager
def sfn_merge_io():
    """SfN's reads, writes and scheduling for the merge run inside (this thread)."""
    frozen = _freeze_gc()
    _SFN_MERGE_IO.active, _SFN_MERGE_IO.task_memo = True, {}
    try:
        yield
    finally:
        _SFN_MERGE_IO.active, _SFN_MERGE_IO.task_memo = False, None
        if frozen:
            gc.unfreeze()


_INSTALLED = []  # patch_merge_io ran


def patch_merge_io() -> None:
    """Install the read, write and task-graph patches (idempotent; inactive outside ``sfn_merge_io``)."""
    if _INSTALLED:
        return
    _patch_tensor_io()
    _patch_task_graph()
    _INSTALLED.append(True)


def _freeze_gc() -> bool:
    """Keep the garbage collector off the objects alive before the merge: mergekit allocates many small
    task objects per tensor, and each full collection they trigger walks the ~400k objects that importing
    mergekit and transformers left (0.3-0.6 s a pass). New objects are still collected; ``gc.unfreeze``
    afterwards. Not done if the caller froze objects already."""
    if gc.get_freeze_count() or not gc.isenabled():
        return False
    gc.freeze()
    return True


def _patch_tensor_io() -> None:
    """During SfN merges, read safetensors shards with plain reads (tensor_io) instead of mmap, so peak RSS
    follows the tensors alive, not the size of the shards walked, and lazily, so a tensor the output takes
    unchanged is never read; write shards without first copying every tensor to bytes, copying the stored
    bytes of unchanged tensors in the kernel."""
    from mergekit.io import loader, tensor_writer

    original_get = loader.TensorLoader.get.__func__

    def get(cls, shard_path, use_lazy_unpickle=False, device=None):
        if in_sfn_merge() and shard_path.lower().endswith(".safetensors") and device in (None, "cpu"):
            from sfn_merge_plugin.tensor_io import COPY_STORED, SafetensorsReader

            # lazy: a tensor the output takes unchanged is never read, only its bytes copied by the writer
            return SafetensorsReader(shard_path, lazy=COPY_STORED)
        return original_get(cls, shard_path, use_lazy_unpickle=use_lazy_unpickle, device=device)

    loader.TensorLoader.get = classmethod(get)

    original_save = tensor_writer.TensorWriter._save_st

    def _save_st(self, shard_data, shard_path):
        from sfn_merge_plugin.tensor_io import StoredTensor, write_safetensors

        # a StoredTensor (lazy read) may reach an async writer thread, where `active` is not set
        if not in_sfn_merge() and not any(isinstance(v, StoredTensor) for v in shard_data.values()):
            return original_save(self, shard_data, shard_path)
        write_safetensors(shard_data, shard_path, metadata={"format": "pt"})

    tensor_writer.TensorWriter._save_st = _save_st

    original_write = tensor_writer.TensorWriter._write_shard_task

    def _write_shard_task(self, shard_data, shard_index, shard_path):
        if not self.safe_serialization:  # torch.save pickles real tensors
            from sfn_merge_plugin.tensor_io import StoredTensor

            shard_data = {k: v.materialize() if isinstance(v, StoredTensor) else v for k, v in shard_data.items()}
        return original_write(self, shard_data, shard_index, shard_path)

    tensor_writer.TensorWriter._write_shard_task = _write_shard_task


def _patch_task_graph() -> None:
    """Two costs of mergekit's task graph that grow with the tensor count, removed during SfN merges (the
    same graph, the same schedule): ``GatherTensors.arguments`` builds a tensor's ``LoadTensor`` tasks
    (pydantic models) anew on every call, several times per tensor while scheduling, so each is built once;
    and the executor looks every finished task up in its list of targets, so the list gets a set's lookup."""
    from mergekit.graph import Executor
    from mergekit.io.tasks import GatherTensors

    original_arguments, original_init = GatherTensors.arguments, Executor.__init__

    @functools.wraps(original_arguments)
    def arguments(self):
        memo = getattr(_SFN_MERGE_IO, "task_memo", None)
        if memo is None:
            return original_arguments(self)
        hit = memo.get(id(self))
        if hit is None or hit[0] is not self:  # holding the task keeps its id from being reused
            hit = memo[id(self)] = (self, original_arguments(self))
        return dict(hit[1])

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if in_sfn_merge() and type(self.targets) is list:
            self.targets = _TargetList(self.targets)

    GatherTensors.arguments, Executor.__init__ = arguments, __init__


class _TargetList(list):
    """A list whose ``in`` is a set lookup (TaskHandles hash by index and compare by index and universe)."""

    def __init__(self, items):
        super().__init__(items)
        self._set = set(items)

    def __contains__(self, item):
        return item in self._set
