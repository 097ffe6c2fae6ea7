"""Run the walker and the per-chunk statistics of a pair plan on worker threads: one DeltaStats per unit.

Each worker runs whole chunks single-threaded (numpy ufuncs and BLAS release the GIL), which keeps every pass of a
sub-chunk in its core's cache; results are merged in walk order, so the numbers do not depend on the
thread count. In-flight chunks are bounded, so memory stays flat.
"""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import contextmanager
from typing import Optional

from sfn_merge_plugin.delta.pairing import PairPlan
from sfn_merge_plugin.delta.stats import DeltaStats, HistSpec, chunk_stats
from sfn_merge_plugin.delta.walker import DEFAULT_CHUNK_BYTES, iter_chunks


def default_threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def _single_threaded_ops():
    """BLAS (and torch, if loaded for .bin files) single-threaded while the walk runs: parallelism comes
    from our workers, one chunk each (intra-op threads on cache-sized chunks mostly wait on each other:
    60x slower on a busy CPU). The computation itself is numpy: torch is not imported for safetensors."""
    import sys
    from contextlib import ExitStack

    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(1))
        except ImportError:  # pragma: no cover (optional): numpy's BLAS keeps its own thread count
            pass
        torch = sys.modules.get("torch")
        if torch is not None:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, before)
        yield


def _progress(total: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False, dynamic_ncols=True)


def measure_pair(plan: PairPlan, spec: Optional[HistSpec] = None, *, threads: Optional[int] = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = True, label: str = "delta") -> tuple:
    """(list of DeltaStats in ``plan.units`` order, timing dict). ``threads``: worker threads (default:
    the CPUs this process may use, at most 8); 1 runs everything in the calling thread."""
    spec = spec or HistSpec()
    threads = int(threads or default_threads())
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    stats = [DeltaStats() for _ in plan.units]
    bar = _progress(plan.bytes_to_read, label, progress)
    try:
        with _single_threaded_ops():
            t0 = time.perf_counter()
            if threads == 1:
                for chunk in iter_chunks(plan, chunk_bytes=chunk_bytes, progress=bar):
                    stats[chunk.unit.index].add(chunk_stats(chunk.base, chunk.tuned, spec))
            else:
                _run_threaded(plan, spec, stats, threads, chunk_bytes, bar)
            wall = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()
    nbytes = plan.bytes_to_read
    return stats, {"seconds": round(wall, 3), "bytes_read": nbytes, "threads": threads,
                   "gb_per_s": round(nbytes / wall / 1e9, 3) if wall > 0 else None}


def _run_threaded(plan, spec, stats, threads, chunk_bytes, bar):
    from concurrent.futures import ThreadPoolExecutor

    pending = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="sfn-delta") as pool:
        try:
            for chunk in iter_chunks(plan, chunk_bytes=chunk_bytes, progress=bar):
                pending.append((chunk.unit.index, pool.submit(chunk_stats, chunk.base, chunk.tuned, spec)))
                del chunk  # the future holds the tensors; drop ours so memory is freed when it finishes
                while len(pending) > 2 * threads:
                    index, future = pending.popleft()
                    stats[index].add(future.result())
            while pending:
                index, future = pending.popleft()
                stats[index].add(future.result())
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise
