"""Which process of a multi-process (DDP) run this is, how the ranks part after a fit, and which DDP set-ups cannot
run inside a Hydra multirun.

Rank 0 alone writes a run's files and tests its best checkpoint; the other ranks train, then leave. Lightning reads
the rank from the launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID) when it is imported, and sets it in the
processes it spawns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from image_transfer.errors import ConfigError


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def leave_process_group() -> None:
    """End the fit's process group on every rank, each knowing the port the next fit in these processes (the next
    fold) meets on: a free one rank 0 picks now. On the old port a rank that finished first could reach rank 0's old
    store before rank 0 had torn it down, and hang there or fail (rank 0 made 2 s slower to end a fold: hung)."""
    port = [find_free_network_port() if is_rank_zero() else None]
    dist.broadcast_object_list(port, src=0)
    os.environ["MASTER_PORT"] = str(port[0])  # Lightning's cluster environments read it at the next rendezvous
    dist.destroy_process_group()


def refuse_relaunching_in_sweeps(cfg: DictConfig) -> None:
    """Lightning's ddp (start_method popen) starts the other ranks by running this command line again: inside a
    multirun each rank would start the whole sweep again. Refused before anything runs, with what works."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and relaunches(cfg.trainer):
        raise ConfigError(
            "trainer strategy ddp starts its other ranks by re-running the command line, so inside a multirun (-m, "
            "hparams_search, scripts/reproduce.py) every rank would start the sweep again. Use "
            "trainer.strategy.start_method=spawn (trainer=ddp or ddp_sim) for sweeps on one machine, or "
            "hydra/launcher=slurm (SLURM starts the ranks: tasks_per_node follows trainer.devices)."
        )


def relaunches(trainer: DictConfig) -> bool:
    """Whether this trainer config makes Lightning re-run the script for its other ranks."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, Mapping):
        popen = "DDPStrategy" in str(strategy.get("_target_", "")) and strategy.get("start_method", "popen") == "popen"
    else:
        popen = str(strategy).startswith("ddp") and not any(m in str(strategy) for m in ("spawn", "fork"))
    one_process = trainer.get("devices") == 1 and trainer.get("num_nodes", 1) == 1
    # SLURM tasks and torchrun start every rank themselves.
    external = int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    return popen and not one_process and not external
