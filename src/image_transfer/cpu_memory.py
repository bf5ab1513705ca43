"""Process-wide memory settings of the entry points: the garbage collector leaves the loaded libraries alone, and
glibc keeps freed memory in the process (Linux), so large activations do not page-fault every batch.

Once torch, torchvision, timm and Lightning are imported the collector tracks about 550,000 objects, and each full
collection walks them all (0.25 s on the 2-core CPU machine), at exit several times. Frozen (gc.freeze), they are
left out: a short training command ended 1.6 s sooner there (5.2 s instead of 6.8 s, val/acc unchanged).

glibc serves allocations above an adaptive threshold (128 KB to 32 MB) with fresh mmap pages and
unmaps them on free, so each batch's large activations are faulted in and zeroed anew by the
kernel. Served from the heap instead and kept, they are reused. Measured on the 2-core CPU machine:
a frozen EfficientNet-Lite0 training step 2.9x faster, a full fine-tuning step 1.6x faster. The
cost: the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt() parameters


def freeze_loaded_objects() -> None:
    """Leave every object alive now (the imported modules) out of later garbage collections: for an entry point's
    `__main__`, once its imports are done. Nothing collectable is frozen: a collection there finds none."""
    gc.freeze()


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
