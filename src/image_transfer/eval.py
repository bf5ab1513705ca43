"""Metrics of a checkpoint on its run's saved validation split, or on a labelled csv (data.test_csv=...),
and its prediction for each of those images (test_predictions.csv).

    python -m image_transfer.eval ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import freeze_loaded_objects
from image_transfer.data.datamodule import VAL_SPLIT_FILE
from image_transfer.files import write_json
from image_transfer.paths import from_project_root
from image_transfer.runs.build import build_tester, seed_run
from image_transfer.runs.calibrate import tested_decision
from image_transfer.runs.checkpoints import load_checkpoint
from image_transfer.runs.environment import ENVIRONMENT_FILE, environment
from image_transfer.runs.failures import report_user_errors
from image_transfer.runs.outputs import save_test_predictions, scalar_metrics, write_metrics


def evaluate(cfg: DictConfig) -> dict:
    seed_run(cfg)
    if cfg.data.get("from_checkpoint") and not cfg.data.test_csv and not cfg.data.val_split_csv:
        # The checkpoint lives in <run dir>/checkpoints/; its run saved the validation names beside them.
        with open_dict(cfg):
            cfg.data.val_split_csv = str(from_project_root(cfg.ckpt_path).parent.parent / VAL_SPLIT_FILE)
    model, datamodule = load_checkpoint(cfg)
    if not datamodule.has_own_test_set:  # tested on its validation split
        datamodule.check_split()
    output_dir = Path(cfg.paths.output_dir)
    write_json(output_dir / ENVIRONMENT_FILE, environment())
    trainer = build_tester(cfg)
    trainer.test(model, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    metrics |= {
        "test/confusion_matrix": model.confusion_matrices.get("test"),
        "ckpt_path": cfg.ckpt_path,
        "evaluated_on": cfg.data.test_csv
        or (str(datamodule.root / "test") if datamodule.data.test is not None else cfg.data.val_split_csv),
    }
    save_test_predictions(output_dir, datamodule, model)
    metrics |= tested_decision(model, datamodule.test_table.labels)
    write_metrics(output_dir, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
