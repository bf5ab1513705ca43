"""Checkpoints: written atomically, found by path, list or glob, and loaded as a classifier for eval and predict.

Lightning's own save goes through an fsspec transaction that, for local files, stages in the system
temp dir and moves the file over (a copy when /tmp is another file system). Here the file is written
next to its target, flushed to disk, then renamed over it in one step: a killed run never leaves a
truncated file that looks complete.
"""

from __future__ import annotations

import glob
import os
import pickle
import zipfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from image_transfer.errors import UserError
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.onnx_model import OnnxClassifier
from image_transfer.paths import from_project_root


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
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
    """The classifier saved in `path`, for cfg.data's classes; cfg.tta_flip (when not null) replaces its setting."""
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
    if model.hparams.num_classes != len(cfg.data.class_names):
        raise UserError(
            f"{ckpt} predicts {model.hparams.num_classes} classes but data.class_names lists "
            f"{len(cfg.data.class_names)}: set data.class_names to the classes it was trained on."
        )
    if cfg.get("tta_flip") is not None:
        model.hparams.tta_flip = bool(cfg.tta_flip)
    return model


def load_onnx(path: str, cfg: DictConfig) -> OnnxClassifier:
    """An exported classifier (image_transfer.export) for ONNX Runtime; its flip TTA is part of its graph."""
    file = from_project_root(path)
    if not file.is_file():
        raise UserError(f"ckpt_path={path}: no such ONNX file.")
    model = OnnxClassifier.load(file)
    if model.num_classes != len(cfg.data.class_names):
        raise UserError(
            f"{file} predicts {model.num_classes} classes but data.class_names lists {len(cfg.data.class_names)}: "
            "set data.class_names to the classes it was trained on."
        )
    if cfg.get("tta_flip") is not None and bool(cfg.tta_flip) != model.tta_flip:
        raise UserError(
            f"tta_flip={cfg.tta_flip}: {file} was exported with tta_flip={str(model.tta_flip).lower()} inside its "
            "graph; export the checkpoint again with the tta_flip you want."
        )
    return model


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
    """The classifier in cfg.ckpt_path, and a datamodule configured for its input size and classes."""
    model = load_classifier(cfg.ckpt_path, cfg)
    datamodule = instantiate(cfg.data, image_size=model.hparams.image_size)
    return model, datamodule
