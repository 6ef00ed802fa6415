"""Giving memory back to the system after connections that buffered large frames close.

glibc's malloc keeps freed heap memory for reuse, and after a large block is freed it
raises its mmap threshold, so later megabyte buffers come from the heap and part of them
stays with the process once freed. ``malloc_trim(0)`` hands the free pages back. Measured
with benchmarks/bench_held_frames.py (400 connections each growing an unfinished 1 MiB
frame 16 KiB at a time, with --max-buffered-bytes raised to hold them all): RSS 46 MiB
before, 471 MiB while held, 57 MiB 3 s after they close without the trim, 46 MiB with it.
(The main protection is the cap on buffered bytes, 64 MiB by default: 116 MiB at most in
the same run. The connection also drops its buffer as soon as it closes.) The trim costs
a walk of the heap, so it runs at most once a second, and only after a connection that
held at least ``TRIM_AFTER_BYTES`` closes. No effect without glibc; NBA_MALLOC_TRIM=0
turns it off.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os

TRIM_AFTER_BYTES = 256 << 10
TRIM_DELAY_S = 1.0


_UNSET = object()
_trim_function = _UNSET


def _malloc_trim():
    """glibc's malloc_trim, looked up once (find_library may run a subprocess), or None."""
    global _trim_function
    if _trim_function is _UNSET:
        _trim_function = None
        if os.environ.get("NBA_MALLOC_TRIM", "1") == "0":  # benchmarks/bench_held_frames.py compares
            return None
        for name in ("libc.so.6", ctypes.util.find_library("c")):
            try:
                trim = ctypes.CDLL(name).malloc_trim
            except (OSError, AttributeError, TypeError):
                continue
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            _trim_function = trim
            break
    return _trim_function


class MemoryTrimmer:
    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._handle: asyncio.TimerHandle | None = None
        self.trims = 0

    def soon(self, held_bytes: int) -> None:
        """A connection that held ``held_bytes`` of input at its peak has closed."""
        if self._trim is None or self._handle is not None or held_bytes < TRIM_AFTER_BYTES:
            return
        self._handle = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._run)

    def _run(self) -> None:
        self._handle = None
        self._trim(0)
        self.trims += 1

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
