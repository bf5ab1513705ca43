"""Predictions of a checkpoint (or an exported .onnx file, run by ONNX Runtime), or the mean probabilities of
several, for a csv of image names or a folder, as a ready-to-submit csv.

    python -m image_transfer.predict ckpt_path=... [source=test.csv | source=/path/to/folder]
    python -m image_transfer.predict 'ckpt_path=logs/train/runs/<time>/fold_*/checkpoints/best.ckpt' tta_flip=true
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import freeze_loaded_objects
from image_transfer.data.sources import DEFAULT_COLUMNS
from image_transfer.errors import UserError
from image_transfer.files import write_json
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.decision import decide
from image_transfer.models.onnx_model import OnnxClassifier
from image_transfer.runs.build import build_tester
from image_transfer.runs.checkpoints import (
    checkpoint_paths,
    class_names_of,
    datamodule_for,
    decision_of,
    input_size,
    is_multi_label,
    load_model,
)
from image_transfer.runs.environment import ENVIRONMENT_FILE, environment
from image_transfer.runs.failures import report_user_errors
from image_transfer.runs.outputs import write_predictions

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> Path:
    paths = checkpoint_paths(cfg.ckpt_path)
    models = [load_model(path, cfg) for path in paths]
    sizes = sorted({input_size(m) for m in models})
    if len(sizes) > 1:
        raise UserError(f"ckpt_path: the checkpoints take different image sizes {sizes}; ensemble models of one size.")
    classes = [class_names_of(m) for m in models]
    if any(c != classes[0] for c in classes):
        raise UserError(
            f"ckpt_path: the models' classes differ ({'; '.join(f'{p}: {c}' for p, c in zip(paths, classes))}); "
            "ensemble models of the same classes in the same order."
        )
    decisions = [decision_of(m) for m in models]
    if any(d != decisions[0] for d in decisions):
        raise UserError(
            "ckpt_path: the models' decision rules differ "
            f"({'; '.join(f'{p}: {d}' for p, d in zip(paths, decisions))}): set threshold=P to apply one to their "
            "mean probabilities."
        )
    datamodule = datamodule_for(cfg, models[0])
    write_json(Path(cfg.paths.output_dir) / ENVIRONMENT_FILE, environment())
    trainer = build_tester(cfg)
    # The images are decoded once (the datamodule keeps them); each model adds its probabilities.
    probs = torch.stack([probabilities(m, trainer, datamodule) for m in models]).mean(0)
    output = write_predictions(
        Path(cfg.output),
        datamodule.predict_table.names,
        probs.numpy(),
        # The data's own columns where its settings name them; predicting reads no labelled data to find others.
        datamodule.hparams.name_column or DEFAULT_COLUMNS[0],
        datamodule.hparams.label_column or DEFAULT_COLUMNS[1],
        classes[0],
        probabilities=cfg.probabilities,
        label_format=cfg.label_format,
        predicted=decide(probs, decisions[0], is_multi_label(models[0])).numpy(),
        delimiter=datamodule.label_delimiter,
    )
    log.info("wrote %d predictions of %d model(s) to %s", len(probs), len(models), output)
    return output


def probabilities(model: ImageClassifier | OnnxClassifier, trainer, datamodule) -> torch.Tensor:
    """Each image's class probabilities: a checkpoint through Lightning, an ONNX file through ONNX Runtime (on the
    same uint8 batches)."""
    if isinstance(model, OnnxClassifier):
        datamodule.setup("predict")
        batches = datamodule.predict_dataloader()
        return torch.cat([torch.from_numpy(model.probabilities(batch.images.numpy())) for batch in batches])
    return torch.cat(trainer.predict(model, datamodule=datamodule))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
@report_user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
