"""Event files read back as TensorBoard reads them: per run dir, its scalars and its HPARAMS session."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def runs(root: Path) -> list[Path]:
    """Every dir under `root` (itself included) that holds event files: TensorBoard's runs."""
    return sorted({p.parent for p in Path(root).rglob("events.out.tfevents.*")})


def load(run: Path) -> EventAccumulator:
    return EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def last_scalar(events: EventAccumulator, tag: str) -> float:
    return events.Scalars(tag)[-1].value


class Session(NamedTuple):
    run: Path
    hparams: dict  # name -> str | float | bool
    metrics: dict  # metric tag -> the run's last value of that scalar, as the HPARAMS table shows it


def sessions(root: Path) -> list[Session]:
    found = []
    for run in runs(root):
        events = load(run)
        content = events.PluginTagToContent("hparams").get("_hparams_/session_start_info")
        if content is None:
            continue
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/experiment"]
        ).experiment
        tags = [info.name.tag for info in experiment.metric_infos]
        found.append(Session(run, hparams, {tag: last_scalar(events, tag) for tag in tags}))
    return found
