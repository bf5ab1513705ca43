from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from vehicle_transfer import CONFIG_DIR, PROJECT_ROOT
from vehicle_transfer.cpu_memory import keep_freed_memory

keep_freed_memory()  # as the entry points do: in-process training runs page-fault less

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles"


def compose_config(config_name: str, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """A config as the entry point would see it, writing into `output_dir`, reading the shared data."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name, overrides=[f"data.root={SHARED_DATA}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "train.csv").is_file():
        pytest.fail(f"the real data set is expected at {SHARED_DATA} (../shared beside the project)")
    return SHARED_DATA


# Small, fast settings for real training runs on 2 CPU cores.
TINY = ["data.subset=160", "model.image_size=96", "data.batch_size=16", "trainer.accelerator=cpu", "logger=tensorboard"]
