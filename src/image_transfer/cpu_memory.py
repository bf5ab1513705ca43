"""Keep freed memory in the process (Linux, glibc), so large activations do not page-fault every batch.

glibc serves allocations above an adaptive threshold (128 KB to 32 MB) with fresh mmap pages and
unmaps them on free, so each batch's large activations are faulted in and zeroed anew by the
kernel. Served from the heap instead and kept, they are reused. Measured on the 2-core CPU machine:
a frozen EfficientNet-Lite0 training step 2.9x faster, a full fine-tuning step 1.6x faster. The
cost: the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt() parameters


def keep_freed_memory() -> bool:
    """Turn off mmap-backed allocations and heap trimming; False where not glibc (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # another C library (musl): leave it as it is
        return False
    log.debug("glibc malloc: mmap off, no trimming (%s)", applied)
    return applied
