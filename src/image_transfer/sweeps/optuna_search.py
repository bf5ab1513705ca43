"""The Optuna search behind hydra/sweeper=optuna: a thin adapter, Optuna does the searching.

Each round asks the study for up to n_jobs trials, samples their parameters from the search space (Hydra's sweep
syntax in hydra.sweeper.params and on the command line), launches them as Hydra jobs through the configured
launcher (job number and job dir = trial number) and tells the study how each ended: complete (the job's
optimized_metric), pruned, or failed (error.txt in its job dir; the search goes on).

The study lives in hydra.sweeper.storage, so the same command again (same storage and study) continues it, and
several workers on one storage share it: together they run n_trials trials in all (see `_reserve`).
"""

from __future__ import annotations

import logging
import math
from itertools import groupby
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from image_transfer.errors import UserError
from image_transfer.files import write_atomically
from image_transfer.models.metric_names import direction
from image_transfer.runs.failures import error_line
from image_transfer.sweeps import search_space
from image_transfer.sweeps.job_records import write_error
from image_transfer.sweeps.objective import check_objective
from image_transfer.sweeps.search_outputs import write_search_outputs
from image_transfer.sweeps.storage import open_storage, storage_fault, storage_url

log = logging.getLogger(__name__)
STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # all but WAITING


class SearchError(CompactHydraException):
    """Hydra prints a compact exception's message alone and exits 1."""


class OptunaSearch:
    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        storage: str | None,
        study_name: str,
        sampler: DictConfig | None,
        pruner: DictConfig | None,
        params: DictConfig | None,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise SearchError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both must be 1 or more")
        self.n_trials, self.n_jobs, self.storage, self.study_name = n_trials, n_jobs, storage, study_name
        self.sampler, self.pruner = sampler, pruner
        self.params = dict(params or {})
        self.exhausted = False  # set when a sampler of a finite space has proposed all of it

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        metric = self.config.get("optimized_metric")
        try:
            check_objective(self.config)
            if metric is None:
                raise UserError("optimized_metric=null: an Optuna search needs a metric to optimise")
            space, fixed = search_space.parse([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        except UserError as error:
            raise SearchError(str(error)) from error
        if not space:
            raise SearchError("no search space: set hydra.sweeper.params, e.g. model.optimizer.lr: interval(1e-4,0.1)")
        self._check_composes(search_space.probes(space, fixed))

        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        url = storage_url(self.storage, str(self.sweep_dir))
        try:
            study = self._search(url, metric, space, fixed)
        except Exception as error:
            if (reason := storage_fault(error)) is None:
                raise
            raise SearchError(
                f"the search could not write to its storage or sweep dir ({reason}): the study's trials so far stay "
                f"in {url} (each write is one transaction). Make room, then continue the search with the same "
                f"command and hydra.sweep.dir={self.sweep_dir}."
            ) from error
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise SearchError(
                f"no trial of study {self.study_name} completed: see {self.sweep_dir / 'trials.csv'} and each "
                "failed job's error.txt"
            )
        return study

    def _search(self, url: str, metric: str, space: dict, fixed: dict) -> optuna.Study:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        self.storage_backend = open_storage(url)
        study = self._open_study(url, metric)
        try:
            while not self.exhausted and (batch := self._reserve(study)):
                for trial in batch:
                    study.sampler = self._sampler(trial.number)  # each trial's own seed: resumed or parallel
                    params = {name: search_space.suggest(trial, name, dist) for name, dist in space.items()}
                    overrides = [*fixed.values(), *(f"{name}={value}" for name, value in params.items())]
                    trial.set_user_attr("overrides", overrides)
                self._run(study, batch)
        finally:  # a search stopped by Ctrl-C or SIGTERM still leaves its results so far
            write_search_outputs(study, self.sweep_dir, metric, url)
        return study

    def _check_composes(self, probes: list[list[str]]) -> None:
        """Before any trial trains: every choice and range end composes with the fixed overrides."""
        for overrides in probes:
            try:
                self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            except Exception as error:
                raise SearchError(
                    f"the search space does not compose ({' '.join(overrides)}): {' '.join(str(error).split())}"
                ) from error

    def _open_study(self, url: str, metric: str) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage_backend,
            sampler=self._sampler(0),
            pruner=instantiate(self.pruner) if self.pruner else optuna.pruners.NopPruner(),
            direction=direction(metric),
            load_if_exists=True,
        )
        stored = study.user_attrs.get("optimized_metric")
        if stored not in (None, metric):
            raise SearchError(
                f"study {self.study_name} in {url} optimises {stored}, not optimized_metric={metric}: give this "
                "search another hydra.sweeper.study_name (or hydra.sweep.dir)"
            )
        study.set_user_attr("optimized_metric", metric)
        trials = study.get_trials(deepcopy=False, states=STARTED)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        log.info(
            "Optuna study %s (%s %s) in %s: %d trial(s) so far%s; running up to n_trials=%d in all",
            self.study_name,
            direction(metric),
            metric,
            url,
            len(trials),
            f", {running} running (other workers; or a worker that was killed: those never finish)" if running else "",
            self.n_trials,
        )
        return study

    def _sampler(self, trial_number: int) -> optuna.samplers.BaseSampler:
        """The configured sampler; a configured seed is offset by the trial number, so that a resumed study or a
        second worker does not repeat the proposals of the first trials."""
        if not self.sampler:
            return optuna.samplers.TPESampler()
        seed = self.sampler.get("seed")
        return instantiate(self.sampler, **({} if seed is None else {"seed": seed + trial_number}))

    def _started(self, study: optuna.Study, up_to: int | None = None) -> int:
        trials = study.get_trials(deepcopy=False, states=STARTED)
        return sum(up_to is None or t.number <= up_to for t in trials)

    def _reserve(self, study: optuna.Study) -> list[Trial]:
        """Up to n_jobs new trials while the study has fewer than n_trials. Workers sharing the study may ask at
        the same moment: a trial whose number leaves more than n_trials started trials at or below it lost that
        race, and goes back to the study as WAITING (the next ask, here or on a resume, takes it first)."""
        batch: list[Trial] = []
        while len(batch) < self.n_jobs and self._started(study) < self.n_trials:
            trial = study.ask()
            if self._started(study, up_to=trial.number) > self.n_trials:
                study_id = self.storage_backend.get_study_id_from_name(self.study_name)
                trial_id = self.storage_backend.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                self.storage_backend.set_trial_state_values(trial_id, TrialState.WAITING)
                continue  # recount: the winner may have been a trial that is itself going back
            batch.append(trial)
        return batch

    def _run(self, study: optuna.Study, batch: list[Trial]) -> None:
        """Launch the batch; job numbers are trial numbers, so runs of consecutive numbers go together."""
        for _, group in groupby(enumerate(batch), key=lambda item: item[1].number - item[0]):
            trials = [trial for _, trial in group]
            self._check_job_dirs_are_new(study, trials)
            try:
                returns = self.launcher.launch(
                    [t.user_attrs["overrides"] for t in trials], initial_job_idx=trials[0].number
                )
            except BaseException as error:  # Ctrl-C, or a launcher failure: these trials will never finish
                unfinished = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
                for trial in batch:
                    if trial.number in unfinished:
                        trial.set_user_attr("error", f"the search stopped: {error_line(error)}")
                        self._finish(study, trial, state=TrialState.FAIL)
                raise
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret)

    def _check_job_dirs_are_new(self, study: optuna.Study, trials: list[Trial]) -> None:
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if subdir != "${hydra.job.num}":
            return
        taken = [str(self.sweep_dir / str(t.number)) for t in trials if (self.sweep_dir / str(t.number)).exists()]
        if taken:
            for trial in trials:
                self._finish(study, trial, state=TrialState.FAIL)
            raise SearchError(
                f"job dir(s) {', '.join(taken)} exist but belong to no trial of study {self.study_name}: another "
                "study used this sweep dir. Give this search its own hydra.sweep.dir."
            )

    def _tell(self, study: optuna.Study, trial: Trial, ret: Any) -> None:
        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
        trial.set_user_attr("job_dir", job_dir)
        trial.set_user_attr("choices", OmegaConf.to_container(ret.hydra_cfg.hydra.runtime.choices))  # the recipe's
        try:
            value = ret.return_value  # raises the job's error if it failed
        except optuna.TrialPruned:
            log.info("Trial %d pruned", trial.number)
            self._finish(study, trial, state=TrialState.PRUNED)
            return
        except Exception as error:
            trial.set_user_attr("error", error_line(error))
            log.warning("Trial %d failed: %s", trial.number, error_line(error))
            self._finish(study, trial, state=TrialState.FAIL)
            return
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            message = f"the job returned {value!r}, not a finite {self.config.optimized_metric}"
            write_error(Path(job_dir), trial.user_attrs["overrides"], message)
            trial.set_user_attr("error", message)
            log.warning("Trial %d failed: %s", trial.number, message)
            self._finish(study, trial, state=TrialState.FAIL)
            return
        log.info("Trial %d: %s=%.4f", trial.number, self.config.optimized_metric, value)
        self._finish(study, trial, values=float(value))

    def _finish(self, study: optuna.Study, trial: Trial, **outcome: Any) -> None:
        try:
            study.tell(trial, **outcome)
        except RuntimeError as error:  # the outcome is stored before a sampler's after_trial can raise this
            if "Study.stop" not in str(error):
                raise
            # A sampler of a finite space (grid, brute force) asks to stop once it has proposed every point.
            log.info("The sampler has proposed its whole search space: the search ends here")
            self.exhausted = True
