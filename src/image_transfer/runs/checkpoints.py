"""Checkpoints: written atomically, found by path, list or glob, and loaded as a classifier for eval and predict.

Lightning's own save goes through an fsspec transaction that, for local files, stages in the system
temp dir and moves the file over (a copy when /tmp is another file system). Here the file is written
next to its target, flushed to disk, then renamed over it in one step: a killed run never leaves a
truncated file that looks complete.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from image_transfer.data import ImageDataModule
from image_transfer.errors import UserError
from image_transfer.files import writing
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.decision import with_threshold
from image_transfer.models.onnx_model import OnnxClassifier
from image_transfer.paths import from_project_root

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        with writing(path):
            try:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)


def require_checkpoint(path: str, option: str = "ckpt_path") -> Path:
    """An existing file in torch's zip format, checked without unpickling it: not a directory, not a truncated
    copy, not some other file given by mistake."""
    ckpt = from_project_root(path)
    if not ckpt.is_file():
        hint = " (a run dir: point to its checkpoints/best.ckpt or last.ckpt)" if ckpt.is_dir() else ""
        raise UserError(f"{option}={path}: no such checkpoint file{hint}.")
    try:
        with zipfile.ZipFile(ckpt) as archive:
            pickled = any(name.endswith("/data.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        pickled = False
    if not pickled:
        raise UserError(
            f"{option}={path} is not a PyTorch checkpoint (truncated, or another kind of file): use a "
            "checkpoints/best.ckpt or last.ckpt written by train."
        )
    return ckpt


def load_classifier(path: str, cfg: DictConfig) -> ImageClassifier:
    """The classifier saved in `path`, with its class names; cfg.tta_flip (when not null) replaces its setting."""
    ckpt = require_checkpoint(path)
    try:
        # The architecture comes from the checkpoint's hyperparameters, the weights from its state dict:
        # nothing is downloaded.
        model = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", pretrained=False, weights_path=None)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, TypeError) as error:
        raise UserError(
            f"ckpt_path={path} is not a checkpoint of this project's classifier ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}). Use a checkpoints/best.ckpt or last.ckpt written by train."
        ) from error
    model.data_settings = saved_data_settings(ckpt)  # what its run read: eval and predict default to the same
    if not model.hparams.get("class_names"):  # written before the classes travelled with the model
        model.hparams.class_names = _configured_class_names(model, cfg, ckpt)
    if cfg.get("tta_flip") is not None:
        model.hparams.tta_flip = bool(cfg.tta_flip)
    rule, multi_label = model.hparams.get("decision"), model.hparams.multi_label
    if cfg.get("calibrated") is False:  # a threshold picked on calibrated probabilities means nothing without them
        model.temperature.fill_(1.0)
        rule = None
    model.hparams.decision = with_threshold(rule, cfg.get("threshold"), class_names_of(model), multi_label)
    return model


def _configured_class_names(model, cfg: DictConfig, file: Path) -> list[str]:
    """An older model's classes: the data config's (given, or its run's), checked by count only."""
    given = (cfg.get("data") or {}).get("class_names") or cfg.get("class_names")
    given = given or (model.data_settings or {}).get("class_names")
    num_classes = model.num_classes if isinstance(model, OnnxClassifier) else model.hparams.num_classes
    if not given:
        raise UserError(
            f"{file} was written before checkpoints carried their class names: give them with "
            "data.class_names=[...] (or class_names=[...] for export and serve), in label order."
        )
    if len(given) != num_classes:
        raise UserError(
            f"{file} predicts {num_classes} classes but data.class_names lists {len(given)}: "
            "set data.class_names to the classes it was trained on."
        )
    log.warning("%s carries no class names (an older checkpoint): using the configured %s", file, list(given))
    return [str(c) for c in given]


def load_onnx(path: str, cfg: DictConfig) -> OnnxClassifier:
    """An exported classifier (image_transfer.export) for ONNX Runtime; its flip TTA is part of its graph."""
    file = from_project_root(path)
    if not file.is_file():
        raise UserError(f"ckpt_path={path}: no such ONNX file.")
    model = OnnxClassifier.load(file)
    if not model.class_names:
        model.class_names = _configured_class_names(model, cfg, file)
    if cfg.get("tta_flip") is not None and bool(cfg.tta_flip) != model.tta_flip:
        raise UserError(
            f"tta_flip={cfg.tta_flip}: {file} was exported with tta_flip={str(model.tta_flip).lower()} inside its "
            "graph; export the checkpoint again with the tta_flip you want."
        )
    if cfg.get("calibrated") is False:
        raise UserError(
            f"calibrated=false: {file} has its temperature inside its graph; use the checkpoint it was exported from."
        )
    model.decision = with_threshold(model.decision, cfg.get("threshold"), model.class_names, model.multi_label)
    return model


def class_names_of(model: ImageClassifier | OnnxClassifier) -> list[str]:
    return list(model.class_names if isinstance(model, OnnxClassifier) else model.hparams.class_names)


def decision_of(model: ImageClassifier | OnnxClassifier) -> dict | None:
    return model.decision if isinstance(model, OnnxClassifier) else model.hparams.get("decision")


def temperature_of(model: ImageClassifier | OnnxClassifier) -> list[float] | None:
    """The temperature per class its probabilities are calibrated with (1: uncalibrated); None for an ONNX file
    exported before models carried one."""
    return model.temperature if isinstance(model, OnnxClassifier) else model.temperature.tolist()


def is_multi_label(model: ImageClassifier | OnnxClassifier) -> bool:
    return model.multi_label if isinstance(model, OnnxClassifier) else model.hparams.multi_label


def input_size(model: ImageClassifier | OnnxClassifier) -> int:
    return model.image_size if isinstance(model, OnnxClassifier) else model.hparams.image_size


def load_model(path: str, cfg: DictConfig) -> ImageClassifier | OnnxClassifier:
    """A checkpoint for PyTorch, or an exported .onnx file for ONNX Runtime."""
    return load_onnx(path, cfg) if str(path).endswith(".onnx") else load_classifier(path, cfg)


def checkpoint_paths(spec) -> list[str]:
    """ckpt_path as a list of files: one path, a list of paths, or a glob pattern (fold_*/checkpoints/best.ckpt)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths = []
    for item in specs:
        if glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(from_project_root(item))))
            if not matches:
                raise UserError(f"ckpt_path={item}: the pattern matches no file.")
            paths += matches
        else:
            paths.append(str(item))
    return paths


def load_checkpoint(cfg: DictConfig):
    """The classifier in cfg.ckpt_path, and a datamodule for its input size and classes."""
    model = load_classifier(cfg.ckpt_path, cfg)
    return model, datamodule_for(cfg, model)


def saved_data_settings(ckpt: Path) -> dict | None:
    """The data module settings a checkpoint was trained with (Lightning saves them beside the weights)."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    return saved.get("datamodule_hyper_parameters")


def datamodule_for(cfg: DictConfig, model: ImageClassifier | OnnxClassifier):
    """A datamodule reading labels against the model's classes, at its input size. cfg.data describes the data
    (data=csv ...), or (data=checkpoint, the default of eval and predict) its keys that are set replace the data
    settings the model's run used. A data config that names other classes, or the same in another order, is
    refused."""
    class_names, data = class_names_of(model), OmegaConf.to_container(cfg.data, resolve=True)
    given = data.get("class_names")
    if given and [str(c) for c in given] != class_names:
        raise UserError(
            f"data.class_names lists {list(given)} but the model's classes are {class_names} (in label order): "
            "a model labels only the classes it was trained on, in their order. Drop data.class_names (the model's "
            "are used) or list them as the model does."
        )
    fixed = {"image_size": input_size(model), "class_names": class_names}
    if not data.pop("from_checkpoint", False):
        return instantiate(data, **fixed)
    settings = {**(model.data_settings or {"root": "."}), **{k: v for k, v in data.items() if v is not None}}
    return ImageDataModule(**settings | fixed)
