"""The C library's allocator, for a process that runs mediapipe graphs and encodes video: glibc's
malloc only (elsewhere these do nothing)."""
from __future__ import annotations

import ctypes
import functools

# Frames between two returns of the heap's free pages (give_memory_back) in a loop over a video's
# frames: a mediapipe graph frees buffers of some hundred KB on every frame, and two pose threads
# let the holes they leave add up (a 2-minute clip on two threads: about 510 MB at the peak, 450
# with the returns).
TRIM_EVERY = 32


def give_memory_back() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim). A mediapipe graph holds
    about 100 MB while it runs and glibc keeps those pages once it is closed, so a render that
    extracted poses would carry them through its render stage; elsewhere this does nothing."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None
