"""A checkpoint as an ONNX file for deployment (models/onnx_model.py): uint8 images (N, 3, H, W) in, class
probabilities out, normalisation and flip TTA inside, class names and input size in its metadata.

    python -m image_transfer.export ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt [output=model.onnx]
    python -m image_transfer.predict ckpt_path=model.onnx      # ONNX Runtime, the same csv as from the checkpoint
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import freeze_loaded_objects
from image_transfer.models.onnx_model import export_onnx
from image_transfer.paths import from_project_root
from image_transfer.runs.checkpoints import load_classifier
from image_transfer.runs.failures import report_user_errors


def export(cfg: DictConfig) -> Path:
    model = load_classifier(cfg.ckpt_path, cfg)
    output = from_project_root(cfg.output)
    export_onnx(model, output, list(model.hparams.class_names), model.data_settings)
    return output


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
