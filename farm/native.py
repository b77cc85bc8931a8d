"""The C library's allocator, tuned for a process that runs mediapipe graphs and encodes video:
glibc's malloc only (elsewhere these do nothing)."""
from __future__ import annotations

import ctypes
import functools


def give_memory_back() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim). A mediapipe graph holds
    about 100 MB while it runs and glibc keeps those pages once it is closed, so a render that
    extracted poses would carry them through its render stage; elsewhere this does nothing."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, held fixed


def map_large_blocks() -> None:
    """Have glibc map every block of MMAP_THRESHOLD or more on its own and unmap it when it is
    freed (elsewhere this does nothing). By default glibc raises that threshold, up to 32 MB, each
    time such a block is freed; a mediapipe graph allocates and frees buffers of some hundred KB
    on every frame, so after the first frames they come from the heap, which they fragment: two
    pose threads on a 2-minute clip peaked at about 600 MB, against 420 MB with the threshold
    fixed. Process-wide; called once at the start of the farm's processes."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None
