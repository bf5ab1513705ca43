"""Pictures of a run, in TensorBoard (every TensorBoardLogger of the trainer) and as PNG files in the run dir.

Per validation epoch: the confusion matrix (counts and row-normalised), the ROC curves, and a precision-recall
curve per class in TensorBoard's PR-curve plugin. Once at the start, the augmented training images of the first
batch, as the model receives them. At the end of fit, the most confidently wrong validation images of the best
checkpoint's epoch and of the last epoch, and Grad-CAM maps of a few right and wrong validation images. The test
stage gets its confusion matrix, ROC and PR curves. Nothing from Lightning's sanity check. TensorBoard keeps every
epoch's picture; a PNG holds the latest. Multi-label models get a precision-recall curve per class (as a picture and in
the PR-curve plugin) and, per class, the images whose yes/no for it was most confidently wrong; no confusion matrix
or Grad-CAM (which look at one predicted class).

Drawing draws no random numbers and leaves the model as it found it, so a resumed run still continues exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from image_transfer.errors import ConfigError
from image_transfer.files import write_atomically
from image_transfer.inspection import figures
from image_transfer.inspection.activation_maps import grad_cam
from image_transfer.inspection.examples import EpochExamples, LabelSetExamples
from image_transfer.models.classifier import StepOutput

log = logging.getLogger(__name__)


class Validated(NamedTuple):
    examples: EpochExamples | LabelSetExamples
    epoch: int
    step: int  # the global step TensorBoard files its pictures under


class Inspection(L.Callback):
    def __init__(
        self,
        plots_dir: str,
        class_names: list[str],
        misclassified: int = 16,
        augmented: int = 16,
        activation_maps: bool = True,
        activation_images: int = 4,
    ):
        for option, value in (
            ("misclassified", misclassified),
            ("augmented", augmented),
            ("activation_images", activation_images),
        ):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"callbacks.inspection.{option}={value!r}: use a whole number >= 0 (0: none).")
        self.plots_dir = Path(plots_dir)
        self.class_names = list(class_names)
        self.misclassified, self.augmented = misclassified, augmented
        self.activation_images = activation_images if activation_maps else 0
        self._collecting: EpochExamples | LabelSetExamples | None = None  # the stage running now
        self._last_val: Validated | None = None  # the latest validation epoch
        self._best_val: Validated | None = None  # the epoch of best.ckpt, when it ran in this fit
        self._best_score_before: float | None = None  # the checkpoint's best score before _last_val
        self._augmented_pending = True

    # ---- collecting ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._augmented_pending, self._last_val, self._best_val = self.augmented > 0, None, None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # the untrained model's guesses on a batch or two mean nothing
            right_per_class = math.ceil(self.activation_images / len(self.class_names))
            self._collecting = self._examples(pl_module, self.misclassified, right_per_class)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = self._examples(pl_module, 0, 0)

    def _examples(self, pl_module: L.LightningModule, wrong: int, right_per_class: int):
        if pl_module.hparams.get("multi_label"):
            return LabelSetExamples(len(self.class_names), wrong)
        return EpochExamples(len(self.class_names), wrong, right_per_class)

    def on_validation_batch_end(self, trainer, pl_module, outputs: StepOutput, batch, batch_idx, dataloader_idx=0):
        if self._collecting is not None and not trainer.sanity_checking:
            self._collect(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs: StepOutput, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs)

    def _collect(self, step: StepOutput) -> None:
        if step.probs.shape[1] != len(self.class_names):
            raise ConfigError(
                f"callbacks.inspection.class_names has {len(self.class_names)} names, the model "
                f"{step.probs.shape[1]} classes: set it to data.class_names (the default)."
            )
        if isinstance(self._collecting, LabelSetExamples):
            self._collecting.add(step.shown, step.targets, step.probs, step.predicted)
        else:
            self._collecting.add(step.shown, step.targets, step.probs)

    # ---- per epoch ---------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs: dict, batch, batch_idx) -> None:
        if self._augmented_pending:
            self._augmented_pending = False
            step: StepOutput = outputs["step"]  # see ImageClassifier.training_step
            if step.shown is None:
                log.info("no augmented_samples picture: training batches hold cached features, not images")
                return
            self._draw_augmented(trainer, step.shown[: self.augmented], step.targets[: self.augmented])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._collecting is None:
            return
        epoch, self._collecting = self._collecting, None
        self._draw_curves(trainer, "val", epoch)
        self._last_val = Validated(epoch, trainer.current_epoch, trainer.global_step)
        self._best_score_before = _best_score(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, self._collecting = self._collecting, None
        self._draw_curves(trainer, "test", epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._note_best(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._note_best(trainer)

    def _note_best(self, trainer: L.Trainer) -> None:
        """The checkpoint callback saves after the validation epoch's hooks (at train epoch end or validation end):
        by the next epoch's start, or the end of training, a changed best score says that epoch made best.ckpt."""
        if self._last_val is not None and _best_score(trainer) != self._best_score_before:
            self._best_val, self._best_score_before = self._last_val, _best_score(trainer)

    # ---- end of fit --------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_val is None:  # no validation (data.val_fraction=0)
            return
        if self.misclassified:
            self._draw_misclassified(trainer)
        if self.activation_images and isinstance(self._last_val.examples, EpochExamples):
            self._draw_activation_maps(trainer, pl_module, self._last_val)

    def _draw_misclassified(self, trainer: L.Trainer) -> None:
        """At the best checkpoint and at the last epoch: drawn once when they are the same epoch."""
        best, last = self._best_val, self._last_val
        if best is None and _best_score(trainer) is not None:
            log.info("no misclassified_best.png: the best checkpoint's epoch ran before this run resumed")
        if best is last:
            when = f"best checkpoint and last epoch ({self._best_title(trainer)})"
            pixels = self._misclassified(last, when)
            self.publish(trainer, "val/misclassified_best", pixels, last.step)
        else:
            if best is not None:
                pixels = self._misclassified(best, f"best checkpoint ({self._best_title(trainer)})")
                self.publish(trainer, "val/misclassified_best", pixels, best.step)
            pixels = self._misclassified(last, f"last epoch (epoch {last.epoch})")
        self.publish(trainer, "val/misclassified_last", pixels, last.step)

    def _best_title(self, trainer: L.Trainer) -> str:
        return f"epoch {self._best_val.epoch}, {trainer.checkpoint_callback.monitor} {_best_score(trainer):.4f}"

    # ---- drawing -----------------------------------------------------------------------------------
    def _draw_curves(self, trainer: L.Trainer, stage: str, epoch: EpochExamples | LabelSetExamples) -> None:
        probs, names = epoch.probs, self.class_names
        if not len(probs):
            return
        title = f"Validation, epoch {trainer.current_epoch}" if stage == "val" else "Test"
        title += f": {len(probs)} images"
        if isinstance(epoch, LabelSetExamples):
            self.publish(
                trainer, f"{stage}/pr_curves", figures.render(figures.pr_curves(probs, epoch.targets, names, title))
            )
            for index, name in enumerate(names):
                for writer in self._tensorboards(trainer):
                    has = epoch.targets[:, index].bool()
                    writer.add_pr_curve(f"{stage}/pr_curve/{name}", has, probs[:, index], trainer.global_step)
            return
        labels = epoch.labels
        matrix = figures.confusion_matrix(probs, labels, names, title)
        self.publish(trainer, f"{stage}/confusion_matrix", figures.render(matrix))
        self.publish(trainer, f"{stage}/roc", figures.render(figures.roc(probs, labels, names, title)))
        for index, name in enumerate(self.class_names):
            for writer in self._tensorboards(trainer):
                writer.add_pr_curve(f"{stage}/pr_curve/{name}", labels == index, probs[:, index], trainer.global_step)

    def _misclassified(self, validated: Validated, when: str) -> np.ndarray:
        epoch = validated.examples
        if isinstance(epoch, LabelSetExamples):
            return self._wrong_per_class(epoch, when)
        shown = epoch.wrong_ones(self.misclassified)
        wrong = int((epoch.probs.argmax(dim=1) != epoch.labels).sum())
        title = f"Misclassified validation images at the {when}\n{wrong} of {len(epoch.labels)} wrong" + (
            f"; the {len(shown)} most confident" if shown else ""
        )
        images = torch.stack([image for image, _, _ in shown]) if shown else torch.empty(0, 3, 1, 1)
        captions = [self._caption(label, probs) for _, label, probs in shown]
        return figures.render(figures.image_grid(images, captions, title))

    def _wrong_per_class(self, epoch: LabelSetExamples, when: str) -> np.ndarray:
        shown = epoch.wrong_ones(self.misclassified)
        title = f"Validation images whose yes/no for a class was most confidently wrong, at the {when}\n" + (
            f"{len(shown)} shown, the classes taking turns" if shown else "none wrong"
        )
        images = torch.stack([image for image, *_ in shown]) if shown else torch.empty(0, 3, 1, 1)
        captions = [
            f"{self.class_names[c]}: {float(probs[c]):.2f}\n{'missed (it is there)' if has else 'not there'}"
            for _, c, has, probs in shown
        ]
        return figures.render(figures.image_grid(images, captions, title))

    def _draw_augmented(self, trainer: L.Trainer, images: torch.Tensor, targets: torch.Tensor) -> None:
        if targets.ndim == 1:
            captions = [self.class_names[t] for t in targets.tolist()]
        else:  # MixUp/CutMix: soft labels, each share listed
            captions = [
                "\n".join(f"{share:.2f} {self.class_names[c]}" for c, share in enumerate(row.tolist()) if share > 0.005)
                for row in targets.float()
            ]
        title = "Training images as the model receives them\n(after augmentation and any MixUp/CutMix: label shares)"
        self.publish(trainer, "train/augmented_samples", figures.render(figures.image_grid(images, captions, title)))

    def _draw_activation_maps(self, trainer: L.Trainer, pl_module: L.LightningModule, validated: Validated) -> None:
        epoch = validated.examples
        chosen = [(True, *e) for e in epoch.right_ones(self.activation_images)]
        chosen += [(False, *e) for e in epoch.wrong_ones(self.activation_images)]
        if not chosen:
            return
        images = torch.stack([image for _, image, _, _ in chosen])
        predicted = torch.stack([probs for _, _, _, probs in chosen]).argmax(dim=1)
        device = next(pl_module.parameters()).device
        maps = grad_cam(pl_module, pl_module.backbone, images.to(device), predicted.to(device))
        captions = [f"{'right' if ok else 'WRONG'}: {self._caption(label, probs)}" for ok, _, label, probs in chosen]
        title = f"Grad-CAM of the predicted class on the last feature map\nvalidation images, epoch {validated.epoch}"
        pixels = figures.render(figures.activation_maps(images, maps, captions, title))
        self.publish(trainer, "val/activation_maps", pixels, step=validated.step)

    def _caption(self, label: int, probs: torch.Tensor) -> str:
        predicted = int(probs.argmax())
        return f"true {self.class_names[label]}\npred {self.class_names[predicted]} {float(probs[predicted]):.2f}"

    # ---- output ------------------------------------------------------------------------------------
    def publish(self, trainer: L.Trainer, tag: str, pixels: np.ndarray, step: int | None = None) -> None:
        """A rendered picture to every TensorBoard of the trainer at `step` (default: now) and to plots_dir as
        png_name(tag)."""
        step = trainer.global_step if step is None else step
        for writer in self._tensorboards(trainer):
            writer.add_image(tag, pixels, step, dataformats="HWC")
        if trainer.is_global_zero:
            write_atomically(self.plots_dir / png_name(tag), figures.png(pixels))

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list:
        return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def png_name(tag: str) -> str:
    """val/roc -> roc.png, train/augmented_samples -> augmented_samples.png, test/roc -> test_roc.png."""
    return tag.removeprefix("val/").removeprefix("train/").replace("/", "_") + ".png"


def _best_score(trainer: L.Trainer) -> float | None:
    checkpoint = trainer.checkpoint_callback
    score = getattr(checkpoint, "best_model_score", None)
    return None if score is None else float(score)
