"""hydra/sweeper=optuna: an Optuna search on Hydra's public Sweeper API (the search itself:
image_transfer/sweeps/optuna_search.py).

Hydra imports this module at every start to find plugins, so it stays light: Optuna is imported only when the
sweeper is used.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, and @dataclass then cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from image_transfer.sweeps import SWEEPER_TARGET


@dataclass
class OptunaSweeperConf:
    _target_: str = SWEEPER_TARGET
    _recursive_: bool = False  # sampler and pruner stay configs: each trial gets its own seed, each job a pruner
    n_trials: int = 20  # in all, over every run of the same study (resuming, several workers)
    n_jobs: int = 1  # trials launched together (in parallel with a parallel launcher)
    storage: Any = None  # str or null: an Optuna storage URL, or journal:<file>; null: sqlite in the sweep dir
    study_name: str = "search"
    # Any Optuna sampler; `seed` (if set) + the trial number seeds each trial's sampling.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 42})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})  # null: none
    params: Any = field(default_factory=dict)  # key: Hydra sweep syntax (choice, interval, range)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)


class OptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        from image_transfer.sweeps.optuna_search import OptunaSearch

        self.search = OptunaSearch(**options)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
