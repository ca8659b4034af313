"""Keep freed memory in the process for the next inference, as ONNX Runtime's arena and CUDA's caching allocator do.

PyTorch's CPU tensors come from the C library's malloc. glibc serves a block above its mmap threshold (128 KiB,
rising to at most 32 MiB as big blocks are freed) with a fresh `mmap` and returns it with `munmap` when it is
freed, so every forward pass of a net whose activations are tens of megabytes asks the kernel for new pages and
takes a page fault on the first write to each 4 KiB of them: ResNet-50 at batch 32 takes about 280,000 faults a
pass, which cost about a quarter of its time on the 2-core virtual machine this was measured on. Raising the
thresholds makes malloc keep such blocks on its heap and hand them out again, so a second pass faults no pages.

This is process-wide: after it, memory the process frees stays with the process (it is reused by later
allocations, and `malloc_trim` can give it back) instead of going back to the system at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # mallopt takes a C int: blocks up to 2 GiB come from the heap, and up to 2 GiB are kept free

_state: tuple[bool, str] | None = None


def keep_freed_memory() -> tuple[bool, str]:
    """Raise glibc's mmap and trim thresholds once per process. Returns whether they are raised and, in words, what
    was done or why not (another C library, or a platform without one that cnnzoo knows)."""
    global _state
    if _state is None:
        _state = _raise_thresholds()
    return _state


def _raise_thresholds() -> tuple[bool, str]:
    if platform.system() != "Linux":
        return False, f"freed memory is left to the system allocator ({platform.system()} has no glibc malloc)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False, "freed memory is left to the C library (not glibc: its malloc has no known thresholds)"
    version.restype = ctypes.c_char_p
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not (mallopt(_M_MMAP_THRESHOLD, _LIMIT) and mallopt(_M_TRIM_THRESHOLD, _LIMIT)):
        return False, f"glibc {version().decode()} refused the malloc thresholds; freed memory goes back at once"
    return True, "freed memory kept for reuse (glibc malloc thresholds raised, process-wide)"
