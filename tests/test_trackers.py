"""Experiment trackers beside TensorBoard: a real MLflow tracking server started here on 127.0.0.1, a local MLflow
store, W&B offline and CSV; read back with their own clients and compared with metrics.json."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from image_transfer import train as train_module
from image_transfer.runs.hparams import run_hparams
from image_transfer.runs.trackers import build_loggers
from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, QUICK, compose_config, run_entry_point, without

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")

# The pictures are among the artifacts.
LOGGED = [*without(("~logger", "callbacks.lr_monitor=null", NO_PICTURES), QUICK), "trainer.max_epochs=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own store and artifacts (served through it), stopped afterwards."""
    folder, port = tmp_path_factory.mktemp("mlflow_server"), free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "art")),
    ]
    # Tracking only: without MLflow's job execution (GenAI jobs), which would start 8 more processes at boot.
    environment = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(folder / "server.log", "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the MLflow server did not start:\n{(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("option", "kinds"),
    [
        ("logger=many", ["TensorBoardLogger", "CSVLogger", "MLFlowLogger"]),
        ("logger=[wandb,csv]", ["WandbLogger", "CSVLogger"]),
    ],
)
def test_several_loggers_at_once(option, kinds, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config("train", tmp_path, [option])
    assert [type(logger).__name__ for logger in build_loggers(cfg)] == kinds
    assert str(cfg.logger.get("mlflow", {}).get("tracking_uri", "sqlite:///")).startswith("sqlite:///")  # no server


def numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def only_run(client, name: str, experiment: str = "train"):
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], f"tags.run_dir = '{name}'")
    assert len(found) == 1, [r.info.run_name for r in found]
    return found[0]


def artifacts(client, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture(scope="module")
def served_run(tracking_server, made_up_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("served") / "run"
    options = [*LOGGED, "logger=mlflow", f"logger.mlflow.tracking_uri={tracking_server}"]
    options += [f"data.root={made_up_data.root}", "tracking.registered_model=tiny"]
    cfg = compose_config("train", run_dir, options)
    metrics = train(cfg)
    client = mlflow.MlflowClient(tracking_server)
    return cfg, metrics, client, only_run(client, str(run_dir.resolve()))


@pytest.mark.slow  # a real MLflow server
def test_a_run_on_a_tracking_server_holds_the_settings_and_the_metrics_of_metrics_json(served_run):
    cfg, metrics, _, run = served_run
    on_disk = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and metrics["mlflow/run_id"] == run.info.run_id
    assert run.data.params == {k: str(v) for k, v in run_hparams(cfg).items()}
    assert set(numbers(on_disk)) <= set(run.data.metrics)  # and the curves: lr-*, epoch ...
    for key, value in numbers(on_disk).items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.slow  # a real MLflow server
def test_metrics_are_logged_per_epoch_and_the_outputs_are_artifacts(served_run):
    cfg, metrics, client, run = served_run
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert len({m.step for m in history}) >= metrics["epochs"]  # each epoch's, then the final value
    stored = artifacts(client, run.info.run_id)
    assert {"config.yaml", "metrics.json", "class_names.json", "checkpoints/best.ckpt"} <= stored
    assert {f"plots/{p.name}" for p in (Path(cfg.paths.output_dir) / "plots").glob("*.png")} <= stored
    assert [p for p in stored if p.startswith("plots/")]
    saved = client.download_artifacts(run.info.run_id, "metrics.json", str(Path(cfg.paths.output_dir).parent))
    assert json.loads(Path(saved).read_text())["val/loss"] == metrics["val/loss"]


@pytest.mark.slow  # a real MLflow server
def test_the_best_checkpoint_is_registered_under_the_name_given(served_run):
    _, _, client, run = served_run
    (version,) = client.search_model_versions("name = 'tiny'")
    assert version.run_id == run.info.run_id and version.source.endswith("/checkpoints")


@pytest.mark.slow  # three fits
def test_cross_validation_is_a_parent_run_with_a_child_per_fold(made_up_data, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "cv"
    options = [*LOGGED, "trainer.max_epochs=1", "data.folds=2", "logger=mlflow", f"logger.mlflow.tracking_uri={store}"]
    metrics = train(compose_config("train", run_dir, [*options, f"data.root={made_up_data.root}"]))
    client = mlflow.MlflowClient(store)
    parent = only_run(client, str(run_dir.resolve()))
    assert parent.data.params["fold"] == "mean"
    assert parent.data.metrics["val/acc"] == pytest.approx(metrics["val/acc"]) and "oof_predictions.csv" in artifacts(
        client, parent.info.run_id
    )
    for fold in (0, 1):
        child = only_run(client, str((run_dir / f"fold_{fold}").resolve()))
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.data.params["fold"] == str(fold)
        assert child.data.metrics["val/acc"] == pytest.approx(metrics["folds"]["val/acc"][fold])
    assert (tmp_path / "artifacts").is_dir()  # a local store keeps artifacts beside its database, not in ./mlruns


@pytest.mark.slow  # two fits
def test_a_resumed_run_goes_on_in_its_tracked_run(made_up_data, tmp_path):
    store, run_dir = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "run"
    crash = ["+callbacks.crash._target_=tests.test_lr_find.CrashOnce", "+callbacks.crash.epoch=1"]
    run = [*LOGGED, "logger=mlflow", f"logger.mlflow.tracking_uri={store}", f"data.root={made_up_data.root}", *crash]
    run.append(f"+callbacks.crash.marker={tmp_path}/crashed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config("train", run_dir, run))
    client = mlflow.MlflowClient(store)
    assert only_run(client, str(run_dir.resolve())).info.status == "FAILED"
    resumed = train(compose_config("train", run_dir, [*run, f"resume={run_dir}"]))
    again = only_run(client, str(run_dir.resolve()))  # one run, not two
    assert again.info.status == "FINISHED" and again.info.run_id == resumed["mlflow/run_id"]
    steps = {m.step for m in client.get_metric_history(again.info.run_id, "val/loss")}
    assert len(steps) == resumed["epochs"] + 1  # the crashed attempt's epoch, the resumed one's, the final value


@pytest.mark.slow  # a sweep of two fits
def test_each_job_of_a_sweep_is_a_run_tagged_with_the_sweep(made_up_data, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = ["model.optimizer.lr=0.001,0.003", "logger=mlflow", f"logger.mlflow.tracking_uri={store}"]
    sweep += [f"data.root={made_up_data.root}", f"paths.log_dir={tmp_path}"]
    run_entry_point(train_module.main, "-m", *LOGGED, *sweep)
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    client = mlflow.MlflowClient(store)
    runs = {run.data.tags["job"]: run for run in client.search_runs(["1"])}
    assert set(runs) == {"0", "1"} and {r.data.tags["sweep"] for r in runs.values()} == {str(sweep_dir)}
    assert [runs[job].data.params["lr"] for job in ("0", "1")] == ["0.001", "0.003"]
    assert "model.optimizer.lr=0.003" in runs["1"].data.tags["overrides"].split(",")
    assert runs["1"].info.run_name == f"multiruns/{sweep_dir.name}/1"


@pytest.mark.slow  # MLflow's retries
def test_a_dead_tracking_uri_stops_the_run_in_seconds_with_one_message(made_up_data, tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    command = [*LOGGED, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}", f"data.root={made_up_data.root}"]
    start = time.monotonic()
    with pytest.raises(SystemExit) as exited:  # in this process: test_cli has a user error's exit status in one
        run_entry_point(train_module.main, *command, f"paths.log_dir={tmp_path}")
    assert exited.value.code == 1 and time.monotonic() - start < 60
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"logger.mlflow.tracking_uri={uri}" in errors[0] and "mlflow server" in errors[0]
    assert "Traceback" not in stderr and not list(tmp_path.rglob("checkpoints"))


@pytest.mark.slow  # W&B's own service process
def test_wandb_offline_and_csv_get_the_settings_and_the_final_metrics(made_up_data, tmp_path):
    run_dir = tmp_path / "run"
    env = {"WANDB_SILENT": "true"} | {f"WANDB_{k}_DIR": str(tmp_path / k) for k in ("CONFIG", "CACHE", "DATA")}
    options = [*LOGGED, "logger=[csv,wandb]", f"data.root={made_up_data.root}"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        cfg = compose_config("train", run_dir, options)
        metrics = train(cfg)
        wandb.teardown()  # W&B's service may still be writing the run's records when finish() returns: wait for it
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len([r for r in rows if r.get("val/loss")]) >= metrics["epochs"] + 1  # per epoch, and the final value
    final = {k: float(v) for k, v in rows[-1].items() if v and k in numbers(metrics)}
    assert final == pytest.approx({k: float(v) for k, v in numbers(metrics).items() if k in final})
    assert set(numbers(metrics)) <= {k for r in rows for k, v in r.items() if v} | {"step"}
    params = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert params == run_hparams(cfg)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert metrics["wandb/run_dir"] == str(offline)
    (records,) = offline.glob("run-*.wandb")
    logged = records.read_bytes()
    for key in (*numbers(metrics), *run_hparams(cfg)):
        assert key.encode() in logged, key
    assert {"metrics.json", "config.yaml"} <= {p.name for p in (offline / "files").iterdir()}
