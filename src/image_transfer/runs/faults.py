"""A run stopped by its machine: a file system that is full or cannot be written, or too little memory. One message
says what failed, what is intact (the last good checkpoint, which the atomic writers never leave half-written) and
how to go on."""

from __future__ import annotations

import logging
import re
import threading
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from image_transfer.data.disk_cache import cache_root
from image_transfer.errors import EnvironmentFault, chain
from image_transfer.files import NO_SPACE, free_space, storage_error
from image_transfer.paths import from_project_root
from image_transfer.runs.resume import resumable, resume_command

log = logging.getLogger(__name__)

# How allocators say they ran out: torch's CPU allocator, CUDA's (and other accelerators'), Python's own.
MEMORY_SIGNS = ("can't allocate memory", "out of memory")
ALLOCATION = re.compile(r"tried to allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGT]iB)")


def environment_fault(error: BaseException, cfg: DictConfig) -> EnvironmentFault | None:
    """The fault behind `error` as a message for the user (what failed / what is intact / how to go on), or None
    when the machine is not the cause."""
    if not is_environment_fault(error):
        return None
    cause, shortage = storage_error(error), memory_shortage(error)
    run_dir = Path(cfg.paths.output_dir)
    good = good_checkpoints(run_dir)
    intact = f"Intact in {run_dir}: {', '.join(good.values())}." if good else "No checkpoint had been written."
    training = cfg.get("task_name") == "train"
    if cause is not None:
        path = cause.filename or str(run_dir)  # a library's own writes (TensorBoard's) name no file
        full = cause.errno in NO_SPACE  # else a read-only mount or permissions
        fix = "Make room there" if full else "Make it writable"
        if not full:
            what = f"{cause.strerror}: {path}."
        elif cause.filename:
            what = f"no space left for {path} ({free_space(path)}): writing it failed."
        else:
            what = f"no space left: a write failed (the file system of {path} has {free_space(path)})."
        if training and resumable(run_dir):
            then = f"{fix} (or move the run dir to another disk), then: {resume_command(run_dir)}"
        else:
            then = f"{fix} and run it again, or write elsewhere: {relocation(cfg, Path(path))}."
    else:
        what, then = shortage, smaller_batch(cfg)
        if training and good:
            then += f" ckpt_path={next(iter(good))} starts the new run from its training state."
    return EnvironmentFault("\n".join([what, intact, then]))


def is_environment_fault(error: BaseException) -> bool:
    """Whether the machine caused `error` (cheap: the message, which reads the run's checkpoints, is not built)."""
    return storage_error(error) is not None or memory_shortage(error) is not None


def quiet_storage_faults_in_threads() -> None:
    """A library's writer thread (TensorBoard's) that meets a full disk dies printing its traceback, then the main
    thread meets the same error and reports it as a fault: the thread's traceback is left out (debug log)."""
    report = threading.excepthook
    if getattr(report, "quiet_storage_faults", False):  # installed already (every job of a multirun calls this)
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if storage_error(args.exc_value) is None:
            report(args)
        else:
            log.debug("thread %s stopped: %s", args.thread.name if args.thread else "?", args.exc_value)

    hook.quiet_storage_faults = True
    threading.excepthook = hook


def memory_shortage(error: BaseException) -> str | None:
    """What ran out, said in one line, when `error` (or its chain) is an allocation failure."""
    for cause in chain(error):
        text = str(cause)
        if isinstance(cause, MemoryError | torch.OutOfMemoryError) or any(sign in text for sign in MEMORY_SIGNS):
            where = "accelerator" if isinstance(cause, torch.OutOfMemoryError) else "CPU"
            size = ALLOCATION.search(text)
            amount = f"{int(size[1]) / 2**30:.2f} GiB" if size and size[1] else size[2] if size else None
            return f"out of {where} memory{f' (allocating {amount})' if amount else ''}."
    return None


def smaller_batch(cfg: DictConfig) -> str:
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    size = OmegaConf.select(cfg, "data.image_size", default=None)
    at = f"data.batch_size={batch}" + (f" and image size {size}" if size else "")
    if not isinstance(batch, int) or batch < 2:
        return f"It ran at {at}: try a smaller model.image_size or a smaller model."
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1
    return (
        f"It ran at {at}: try data.batch_size={batch // 2} (trainer.accumulate_grad_batches={2 * accumulate} keeps "
        "the effective batch), or a smaller model.image_size."
    )


def relocation(cfg: DictConfig, path: Path) -> str:
    """The option that moves what `path` belongs to."""
    output = cfg.get("output")
    if output and path == from_project_root(output):
        return "output=FILE"
    if path.is_relative_to(cache_root(OmegaConf.select(cfg, "data.cache_dir", default=None))):
        return "data.cache_dir=DIR (or IMAGE_TRANSFER_CACHE_DIR=DIR)"
    return "paths.log_dir=DIR puts new run dirs on another file system"


def good_checkpoints(run_dir: Path) -> dict[Path, str]:
    """The complete checkpoints under `run_dir` (its folds too), newest first, each described by its path in the
    run dir and its epoch. Partial files start with a dot."""
    found = [p for p in run_dir.rglob("*.ckpt") if not p.name.startswith(".") and complete(p)]
    found.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return {p: f"{p.relative_to(run_dir)} (epoch {epoch(p)})" for p in found}


def epoch(path: Path) -> int | str:
    try:  # memory-mapped: no more memory than the small pickled part, even when memory is short
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)["epoch"]
    except Exception:
        return "?"


def complete(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False
