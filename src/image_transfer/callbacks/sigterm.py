"""SIGTERM under DDP: every rank stops at the same training batch, without a collective inside a signal handler.

Lightning's own SIGTERM handler broadcasts from inside the handler. A handler runs wherever the main thread happens
to be, so that broadcast pairs with whatever collective another rank is in (a gradient all-reduce, the checkpoint
barrier) and the ranks can wait on each other for ever: a killed run that never exits. Here, once fitting runs,
the handler only notes the signal; at the start of each training batch, and when training ends, the ranks add up
their notes in one all-reduce that every rank makes at that same point, and all of them stop together when any rank
was signalled (SLURM signals every task, `kill` only rank 0). That all-reduce runs on a gloo group of CPU tensors:
one on the GPU would make the host wait for the GPU at every batch (reading the result), and the input pipeline
would lose its head start. One process keeps Lightning's handler: nothing to sync.
"""

from __future__ import annotations

import signal
import threading

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException


class StopTogetherOnSigterm(L.Callback):
    def __init__(self) -> None:
        self.signalled = False
        self._group = None  # made by every rank at its first vote (the same training batch on all ranks)

    def _note(self, signum, frame) -> None:
        self.signalled = True

    def _take_over(self, trainer: L.Trainer) -> None:
        # Lightning installs its handler as fitting starts and puts the one from before back when fitting ends.
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note)

    def _stop_if_any_rank_was_signalled(self, trainer: L.Trainer) -> None:
        if trainer.world_size < 2:
            return
        if self._group is None:
            self._group = dist.new_group(backend="gloo")
        votes = torch.tensor(int(self.signalled))
        dist.all_reduce(votes, group=self._group)
        if votes.item() > 0:
            raise SIGTERMException  # on every rank at once: none is left waiting in a collective

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._stop_if_any_rank_was_signalled(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_any_rank_was_signalled(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Let the group go with the fit's process group (runs/ranks.py): the next fold's fit makes its own, and held
        # here it would keep rank 0's old store serving for the rest of the run.
        self._group = None
