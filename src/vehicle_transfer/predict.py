"""Predictions of a checkpoint for a csv of image names or a folder, as a ready-to-submit csv.

    python -m vehicle_transfer.predict ckpt_path=... [source=test.csv | source=/path/to/folder]
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from vehicle_transfer import CONFIG_DIR
from vehicle_transfer.paths import write_atomically
from vehicle_transfer.runs import build_trainer, load_checkpoint

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> Path:
    model, datamodule = load_checkpoint(cfg)
    trainer = build_trainer(cfg)
    probs = torch.cat(trainer.predict(model, datamodule=datamodule)).numpy()
    names = datamodule.predict_table.names
    class_names = list(cfg.data.class_names)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([cfg.data.name_column, cfg.data.label_column, "probability"] + [f"prob_{c}" for c in class_names])
    for name, p in zip(names, probs):
        writer.writerow([name, int(p.argmax()), f"{p.max():.6f}"] + [f"{q:.6f}" for q in p])
    output = Path(cfg.output)
    write_atomically(output, buffer.getvalue())
    log.info("wrote %d predictions to %s", len(names), output)
    return output


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
