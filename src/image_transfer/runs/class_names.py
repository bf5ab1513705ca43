"""The classes of a run come from its data (inferred where data.class_names is null) before anything else is built,
so the model (and through it every checkpoint), the callbacks and the run's config.yaml carry them."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from image_transfer.errors import ConfigError
from image_transfer.files import write_json

log = logging.getLogger(__name__)

CLASS_NAMES_FILE = "class_names.json"


def with_class_names(cfg: DictConfig) -> DictConfig:
    """`cfg` with data.class_names as the data has them: checked where given, inferred where null."""
    if cfg.data.get("from_checkpoint"):
        raise ConfigError(
            "data=checkpoint reads the data settings of a checkpoint (eval, predict); training needs a data config: "
            "data=image_folder data.root=DIR, data=csv data.root=FILE.csv, or a named one (data=emergency_vehicles)."
        )
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(
            "data.root is not set: give the data to train on, data=image_folder data.root=DIR (a folder per class, "
            "or train/ val/ folders) or data=csv data.root=FILE.csv."
        )
    names = instantiate(cfg.data).class_names
    if not cfg.data.get("class_names"):
        log.info("classes (inferred from the data, in label order): %s", names)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.data.class_names = list(names)
    return cfg


def write_class_names(output_dir: Path, class_names: list[str]) -> Path:
    return write_json(Path(output_dir) / CLASS_NAMES_FILE, list(class_names))
