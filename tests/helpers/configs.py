"""Configs as the entry points compose them, and where the real data set lives (../shared beside the project).

Composing reads no data: a config pointing at SHARED_DATA is fine in the fast tier as long as nothing runs it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from image_transfer import CONFIG_DIR, PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles"

# Pictures (callbacks.inspection) take most of a tiny fit's time (about 1.5 s of QUICK's 2.3): runs that check neither
# the pictures nor what drawing could change leave them out. Tests of pictures, or of a resume that must stay exact
# while they are drawn, use without(NO_PICTURES, ...).
NO_PICTURES = "callbacks.inspection=null"

# Small, fast settings for real training runs on 2 CPU cores.
TINY = [
    "data.subset=160",
    "model.image_size=96",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "logger=tensorboard",
    NO_PICTURES,
]

# The baseline CNN on 32 px synthetic images, one epoch, nothing logged: a real fit in about a second.
QUICK = [
    "model=cnn",
    "finetune=full",
    "model.image_size=32",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "~logger",
    "callbacks.lr_monitor=null",
    NO_PICTURES,
]


def without(left_out: str | tuple[str, ...], overrides: list[str]) -> list[str]:
    """`overrides` less the ones named: e.g. QUICK with pictures, or with a logger."""
    left_out = (left_out,) if isinstance(left_out, str) else left_out
    return [o for o in overrides if o not in left_out]


def compose_config(config_name: str, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """A config as the entry point would see it, writing into `output_dir`; train and audit read the shared data
    (unless `overrides` name another data.root), eval and predict the data their checkpoint was trained on."""
    shared = [f"data.root={SHARED_DATA}"] if config_name in ("train", "audit") else []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name, overrides=[*shared, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def run_entry_point(main: Callable[[], object], *args: str) -> None:
    """Run a Hydra entry point (e.g. image_transfer.train.main) in this process, as `python -m ... *args` would,
    with Hydra's logging setup left out and its global state (the job's HydraConfig, the root logger) restored
    afterwards. Raises SystemExit where the command would exit non-zero."""
    root, hydra_config = logging.getLogger(), HydraConfig.instance()
    level, handlers, job_config = root.level, list(root.handlers), hydra_config.cfg
    argv = ["python", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    try:
        with patch.object(sys, "argv", argv):
            main()
    finally:
        hydra_config.cfg = job_config
        root.setLevel(level)
        root.handlers[:] = handlers
