"""Keeping freed memory in the process, so that the next frame does not pay for fresh pages.

Inference allocates the same large tensors for every frame. With glibc's default settings, blocks of
more than a few megabytes are mapped from the kernel when allocated and unmapped when freed, and the
top of the heap is given back once freed, so every frame touches fresh pages: each is a page fault that
the kernel answers by zeroing a page. Measured on 2 cores at 1920x1080 (MobileNetV2, fp32): 14,000
faults a frame for the optimized model, 110,000 for the eager one, and with the memory kept the frame
time went from about 97 to 85 ms and from about 280 to 165 ms (README, "Speed").

Training on the CPU pays the same: 12 steps of `train_base.py` (MobileNetV2, batch 8, 256 px crops)
took 25 s with 7.1 million faults, and 16.5 s with 0.55 million with the memory kept.

`retain_freed_memory()` sets glibc's allocator to keep what it frees (as jemalloc and tcmalloc do by
default): the process then stays at its peak memory instead of shrinking between frames. The inference
and training commands call it at start (and the processes a plain multi-GPU start spawns);
`BGM_RETAIN_MEMORY=0` in the environment turns it off.
"""
import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks larger than 1 GiB are still mapped and unmapped
TRIM_THRESHOLD = (1 << 31) - 1  # the largest value the int parameter holds: the heap is not trimmed


def retain_freed_memory() -> bool:
    """On Linux with glibc, keeps freed memory in the process for later allocations (see above).
    Returns whether the setting took effect: False elsewhere, or with BGM_RETAIN_MEMORY=0."""
    if os.environ.get('BGM_RETAIN_MEMORY', '1') == '0' or not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.gnu_get_libc_version  # glibc only: other C libraries have other allocators
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
