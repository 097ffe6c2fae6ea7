"""Positioned reads into a caller's buffer: the one read loop of ``tensor_io`` and ``delta.walker``.

Its own module, importing nothing but ``os``: ``tensor_io`` imports torch, and the delta walker reads
safetensors checkpoints without importing torch (tests/test_delta.py checks it).
"""

from __future__ import annotations

import os


def read_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill the byte view ``view`` from ``offset`` of ``fd`` with ``os.preadv`` (no seek: thread-safe on a
    shared fd); return the bytes read, fewer than ``len(view)`` only where the file ends first."""
    got, n = 0, len(view)
    while got < n:
        k = os.preadv(fd, [view[got:]], offset + got)
        if k <= 0:
            break
        got += k
    return got
