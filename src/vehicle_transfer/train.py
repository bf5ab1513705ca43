"""Fit a classifier, then test its best checkpoint on the labelled hold-out.

    python -m vehicle_transfer.train [model=...] [finetune=...] [experiment=...] [key=value ...]
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vehicle_transfer import CONFIG_DIR
from vehicle_transfer.runs import build_trainer, scalar_metrics, seed_run, write_metrics

log = logging.getLogger(__name__)
# Frozen BatchNorm layers are in eval mode on purpose (see ImageClassifier.train).
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training")


def train(cfg: DictConfig) -> dict:
    """Train per `cfg`; returns the metrics also written to <output_dir>/metrics.json."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    seed_run(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    trainer = build_trainer(cfg, first_callbacks=[instantiate(cfg.finetune.callback)])
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    datamodule.save_split(output_dir)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = scalar_metrics(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics |= scalar_metrics(trainer.callback_metrics)
        metrics["test/confusion_matrix"] = model.confusion_matrices.get("test")
    metrics["data/skipped_images"] = len(datamodule.skipped_images)
    metrics |= {"best_ckpt": best, "epochs": trainer.current_epoch, "wall_time_s": round(time.perf_counter() - start, 1)}
    write_metrics(output_dir, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))  # what a Hydra sweeper optimises


if __name__ == "__main__":
    main()
