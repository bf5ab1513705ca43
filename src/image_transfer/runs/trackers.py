"""Experiment trackers (configs/logger: TensorBoard, MLflow, Weights & Biases, CSV), as Lightning loggers: built for
a run with its identity (name, tags, parent run, sweep), checked before it trains, and given its outcome at its end
through one path for all of them (`finish_run`): the settings and final metrics (runs/hparams.py), then, where a
tracker keeps files, the run's outputs.

A run that resumes continues its tracked run (MLflow: found by its run_dir tag; W&B: an id derived from its dir).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from omegaconf import DictConfig

from image_transfer.errors import ConfigError
from image_transfer.runs.failures import in_multirun
from image_transfer.runs.hparams import record_session

log = logging.getLogger(__name__)

PACKAGES = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}  # trackers whose package is an optional extra
PROBE_SECONDS = 5.0  # MLflow's own client retries an unreachable server for minutes
# The run dir's outputs a tracker stores: its files (not fold dirs) and the pictures; the loggers' own dirs not.
OUTPUT_DIRS = ("plots",)
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"


def _targets(cfg: DictConfig) -> dict[str, tuple[str, DictConfig]]:
    """{config key: (logger class name, its config)} of the chosen loggers."""
    chosen = {k: c for k, c in (cfg.get("logger") or {}).items() if c is not None}
    return {k: (str(c.get("_target_", "")).rsplit(".", 1)[-1], c) for k, c in chosen.items()}


def check_trackers(cfg: DictConfig) -> None:
    """Refuse, in seconds and before any data is read, a tracker whose package is missing or whose server does not
    answer."""
    for key, (target, config) in _targets(cfg).items():
        package = PACKAGES.get(target)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger={key} needs the {package} package: pip install 'image-transfer[{package}]' "
                f"(or pip install {package}), or choose another logger (logger=tensorboard)."
            )
        if target == "MLFlowLogger":
            _require_answering(f"logger.{key}.tracking_uri", str(config.tracking_uri))


def _require_answering(option: str, uri: str) -> None:
    """A tracking server's URI must answer (any HTTP status: a proxy may guard it); file stores need no server."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return  # something answers there
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"{option}={uri}: no MLflow tracking server answers there ({reason}). Start it (mlflow server --host "
            "127.0.0.1 --port 5000), correct the URI (or MLFLOW_TRACKING_URI), or leave it out for the local store "
            "in logs/mlflow."
        ) from None


def build_loggers(cfg: DictConfig, parent: list[Logger] = ()) -> list[Logger]:
    """The configured loggers for the run in cfg.paths.output_dir; `parent`, a cross-validation's loggers, makes
    each fold's run a child of its run."""
    loggers = []
    for _, (target, config) in _targets(cfg).items():
        extra = {}
        if target == "MLFlowLogger":
            extra = _mlflow_identity(cfg, config, next((p for p in parent if isinstance(p, MLFlowLogger)), None))
        elif target == "WandbLogger":
            extra = _wandb_identity(cfg, next((p for p in parent if isinstance(p, WandbLogger)), None))
        loggers.append(instantiate(config, **extra))
    return loggers


def run_name(cfg: DictConfig) -> str:
    """The run dir below the task's logs (runs/<time>, runs/<time>/fold_1, multiruns/<time>/3): unique, readable."""
    output_dir, logs = Path(cfg.paths.output_dir), Path(cfg.paths.log_dir) / str(cfg.get("task_name", ""))
    return str(output_dir.relative_to(logs)) if output_dir.is_relative_to(logs) else output_dir.name


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Where the run is, and in a sweep or search which one and with which overrides."""
    tags = {"run_dir": str(Path(cfg.paths.output_dir).resolve())}
    if (fold := cfg.data.get("fold")) is not None:
        tags["fold"] = str(fold)
    if in_multirun():
        hydra = HydraConfig.get()
        tags |= {"sweep": hydra.sweep.dir, "job": str(hydra.job.num), "overrides": hydra.job.override_dirname}
    return tags


def _mlflow_identity(cfg: DictConfig, config: DictConfig, parent: MLFlowLogger | None) -> dict:
    tags = dict(config.get("tags") or {}) | run_tags(cfg)
    if parent is not None:
        tags["mlflow.parentRunId"] = parent.run_id  # MLflow's own tag: the UI nests the folds under the run
    extra = {"run_name": run_name(cfg), "tags": tags}
    uri = str(config.tracking_uri)
    if config.get("artifact_location") is None and uri.startswith("sqlite:///"):
        # MLflow would put a local store's artifacts in ./mlruns of whatever the current dir is.
        extra["artifact_location"] = str(Path(uri.removeprefix("sqlite:///")).parent / "artifacts")
    if cfg.get("resume"):
        extra["run_id"] = _tracked_run(uri, str(config.experiment_name), tags["run_dir"])
    return extra


def _tracked_run(uri: str, experiment: str, run_dir: str) -> str | None:
    """The MLflow run of an earlier attempt at this run dir, to go on logging into (None: a new run)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], f"tags.run_dir = '{run_dir}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _wandb_identity(cfg: DictConfig, parent: WandbLogger | None) -> dict:
    if parent is not None:  # W&B has no nested runs: a cross-validation's folds are a group, named after it
        group = parent.experiment.name
    elif cfg.data.get("folds") and cfg.data.get("fold") is None:
        group = run_name(cfg)
    else:
        group = Path(HydraConfig.get().sweep.dir).name if in_multirun() else None
    return {
        "name": run_name(cfg),
        "group": group,
        "id": hashlib.sha1(run_tags(cfg)["run_dir"].encode()).hexdigest()[:16],  # its run dir continues it
        "resume": "allow",
        "reinit": "create_new",  # a cross-validation's run stays open while its folds' runs come and go
    }


def start_trackers(loggers: list[Logger]) -> dict:
    """Open each tracker's run now, so a store or account that cannot take it fails before training; returns where
    the runs are (for metrics.json and the summary)."""
    where = {}
    for logger in loggers:
        try:
            logger.experiment  # noqa: B018  (creates the run)
        except Exception as error:  # each tracker has its own error types; all mean the same here
            reason = " ".join(str(error).split())[:300]
            raise ConfigError(
                f"{type(logger).__name__} could not start its run ({reason}). Correct its settings (logger.*) or "
                "choose another logger (logger=tensorboard)."
            ) from error
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            where |= {"mlflow/run_id": logger.run_id, "mlflow/tracking_uri": logger.experiment.tracking_uri}
        elif isinstance(logger, WandbLogger) and logger.experiment.dir:
            where["wandb/run_dir"] = str(Path(logger.experiment.dir).parent)
    return where


def finish_run(
    loggers: list[Logger], cfg: DictConfig, metrics: dict, step: int, fold: str | None = None, own: bool = False
) -> None:
    """The run's settings and final metrics to every logger, its outputs to those that keep files, then each run
    closed. `own`: loggers no Trainer has finalized (a cross-validation's parent run). A tracker that fails here is
    reported, not raised: the run's outputs are already on disk."""
    record_session(loggers, cfg, metrics, step, fold)
    output_dir, tracking = Path(cfg.paths.output_dir), cfg.get("tracking") or {}
    files = _outputs(output_dir, tracking) if tracking.get("artifacts", True) else []
    for logger in loggers:
        try:
            if isinstance(logger, MLFlowLogger):
                _publish_mlflow(logger, output_dir, files, tracking.get("registered_model"))
            elif isinstance(logger, WandbLogger):
                for file in files:
                    logger.experiment.save(str(file), base_path=str(output_dir), policy="now")
            logger.save()  # CSV writes its rows now
            if own or isinstance(logger, MLFlowLogger):
                logger.finalize("success")  # MLflow: the end time after the final metrics
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()  # the next run of this process (a fold) opens its own
        except Exception:
            log.exception("%s: the run's outcome could not be recorded; its outputs are in %s", logger, output_dir)


def _outputs(output_dir: Path, tracking: DictConfig) -> list[Path]:
    files = [f for f in sorted(output_dir.iterdir()) if f.is_file() and not f.name.startswith(".")]
    files += [f for d in OUTPUT_DIRS for f in sorted((output_dir / d).glob("*")) if f.is_file()]
    if tracking.get("checkpoint", True) and (output_dir / BEST_CHECKPOINT).is_file():
        files.append(output_dir / BEST_CHECKPOINT)
    return files


def _publish_mlflow(logger: MLFlowLogger, output_dir: Path, files: list[Path], registered_model: str | None) -> None:
    client, run_id = logger.experiment, logger.run_id
    for file in files:
        folder = file.parent.relative_to(output_dir).as_posix()
        client.log_artifact(run_id, str(file), None if folder == "." else folder)
    if registered_model and output_dir / BEST_CHECKPOINT in files:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(registered_model)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{client.get_run(run_id).info.artifact_uri}/{BEST_CHECKPOINT.parent.as_posix()}"
        version = client.create_model_version(registered_model, source, run_id=run_id)
        log.info("registered %s as version %s of the model %r", BEST_CHECKPOINT, version.version, registered_model)
