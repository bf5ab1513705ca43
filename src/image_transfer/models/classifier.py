"""The LightningModule: a backbone (pretrained or not) plus a new linear head for the data set's classes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import ConfusionMatrix, MaxMetric
from torchvision.transforms import v2

from image_transfer.data.batch import Batch
from image_transfer.errors import ConfigError
from image_transfer.models.backbones import build_backbone
from image_transfer.models.calibration import calibrated_log_probs, calibrated_probs, loss_of
from image_transfer.models.decision import decide
from image_transfer.models.losses import LOSSES, classification_loss
from image_transfer.models.metric_names import MULTI_LABEL, SINGLE_LABEL, VAL_ACC, VAL_ACC_BEST
from image_transfer.models.metrics import stage_metrics

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.01}


class StepOutput(NamedTuple):
    """What a training, validation or test step gave, for callbacks (inspection/callback.py draws from it)."""

    loss: torch.Tensor
    shown: torch.Tensor | None  # the images the model saw (after MixUp/CutMix), or that cached features stand for
    targets: torch.Tensor  # of `shown`: soft when mixed; multi-hot (N, C) for multi-label data
    probs: torch.Tensor  # class probabilities (N, C)
    predicted: torch.Tensor  # the predicted classes (N,); multi-label: (N, C) bool


class ImageClassifier(L.LightningModule):
    """Carries its class names (hparams.class_names, label order) into every checkpoint; None only in checkpoints
    written before they did. Steps take data/batch.py's Batch: its cached backbone features when it has them
    (data/feature_cache.py: one view per image to train on; the image's and its mirror's to evaluate), else its uint8
    images (N, 3, H, W), normalised with the backbone's own statistics. forward (ONNX export, Grad-CAM) and
    `probabilities` take images alone.

    mixup_alpha / cutmix_alpha > 0 mix training batches (one of the two per batch when both are set);
    tta_flip averages the probabilities of each image and its mirror image in validation, test and predict.
    loss (cross_entropy | focal, with focal_gamma) and class_weights (one per class) shape training only.
    multi_label: a sigmoid per class (binary losses, multi-label metrics), for images of several classes at once;
    its batches carry multi-hot targets (N, C).
    The `temperature` buffer (fitted after training, runs/calibrate.py) and `decision` (models/decision.py) apply
    wherever the model predicts: validation, test, predict and its ONNX export.
    compile=true compiles the backbone in place (nn.Module.compile): checkpoints keep their keys and the finetune
    schedule still finds its stages. What trains is set through `set_trainable` (callbacks/finetune.py).

    `optimizer` and `scheduler` are Hydra configs with `_partial_: true` (kept as plain dicts so
    checkpoints stay loadable); the scheduler partial receives total_steps and phase_starts.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        class_names: list[str] | None = None,
        image_size: int = 224,
        pretrained: bool = True,
        weights_path: str | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        loss: str = "cross_entropy",
        focal_gamma: float = 2.0,
        class_weights: list[float] | None = None,
        decision: dict | None = None,
        multi_label: bool = False,
        tta_flip: bool = False,
        channels_last: bool = True,
        compile: bool = False,
        backbone_lr_factor: float = 1.0,
        lr_phase_epochs: list[int] | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        class_names = [str(c) for c in class_names] if class_names is not None else None  # plain, for weights_only
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"model.class_names lists {len(class_names)} classes but model.num_classes={num_classes}."
            )
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss}: use one of {', '.join(LOSSES)}.")
        class_weights = [float(w) for w in class_weights] if class_weights is not None else None
        if class_weights is not None and (len(class_weights) != num_classes or min(class_weights) <= 0):
            raise ConfigError(
                f"model.class_weights={class_weights}: give {num_classes} positive numbers (one per class, in label "
                "order), or auto (from the training images' class counts)."
            )
        if multi_label and (mixup_alpha > 0 or cutmix_alpha > 0):
            raise ConfigError(
                "model.mixup_alpha / model.cutmix_alpha mix single-label batches; for multi-label data set them to 0."
            )
        optimizer = _plain(optimizer) or DEFAULT_OPTIMIZER
        decision = _plain(decision)
        scheduler, lr_phase_epochs = _plain(scheduler), list(lr_phase_epochs or [])
        self.save_hyperparameters(logger=False)  # the run's HPARAMS session is written at its end (runs/hparams.py)
        built = build_backbone(backbone, pretrained, image_size, weights_path)
        self.backbone = built.features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(built.num_features, num_classes))
        # Statistics scaled to uint8 input; not saved, they follow from the backbone name.
        self.register_buffer("mean", torch.tensor(built.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(built.std).view(1, 3, 1, 1) * 255, persistent=False)
        # Saved: fitted after training (runs/calibrate.py); ones leave the probabilities as trained.
        self.register_buffer("temperature", torch.ones(num_classes))
        weights = torch.tensor(class_weights) if class_weights is not None else None
        self.register_buffer("class_weight", weights, persistent=False)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()

        names = class_names or [f"class_{i}" for i in range(num_classes)]
        for stage in ("train", "val", "test"):
            predicted, scored = stage_metrics(stage, names, multi_label)
            setattr(self, f"{stage}_metrics", predicted)  # of the predicted classes
            setattr(self, f"{stage}_scores", scored)  # of the probabilities
        self.confusion = {}
        if not multi_label:
            self.confusion = {
                stage: ConfusionMatrix(task="multiclass", num_classes=num_classes) for stage in ("val", "test")
            }
            self.val_confusion, self.test_confusion = self.confusion["val"], self.confusion["test"]  # submodules
        mixers = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []
        mixers += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []
        self.mix = v2.RandomChoice(mixers) if mixers else None
        self._bn_stats_frozen = False  # every backbone BatchNorm's statistics fixed (set_trainable)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best epoch
        self.confusion_matrices: dict[str, list[list[int]]] = {}
        self.test_probabilities: list[torch.Tensor] = []  # per test batch, in loader order (train saves them)

    # ---- model ---------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before models carried a temperature: uncalibrated.
        checkpoint["state_dict"].setdefault("temperature", torch.ones_like(self.temperature))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of uint8 images (N, 3, H, W)."""
        return self.head(self.embed(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's features (batch, num_features) of uint8 images."""
        # The buffers' dtype, not float32: under bf16-true precision Lightning has cast the model to bfloat16.
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def set_trainable(self, stages: Iterable[nn.Module], bn_stats_frozen: bool) -> None:
        """Train the head and these backbone stages (callbacks/finetune.py's backbone_stages) only; bn_stats_frozen
        fixes every backbone BatchNorm's statistics, trained or not. Applies the modes that follow at once."""
        self.backbone.requires_grad_(False)
        for stage in stages:
            stage.requires_grad_(True)
        self.head.requires_grad_(True)
        self._bn_stats_frozen = bn_stats_frozen
        self.train(self.training)  # BatchNorm that just froze goes to eval mode now, not at the next train()

    def train(self, mode: bool = True):
        """Keep BatchNorm layers whose parameters are frozen (or all, with bn_stats_frozen) in eval mode:
        their running statistics must not drift. A backbone with nothing to train is wholly in eval mode, a fixed
        feature extractor (no dropout or drop-path either): what its cached features are."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        elif mode:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
                    self._bn_stats_frozen or not any(p.requires_grad for p in module.parameters())
                ):
                    module.eval()
        return self

    # ---- steps ---------------------------------------------------------------------------------
    def view_logits(self, batch: Batch) -> torch.Tensor:
        """Logits (N, views, C) of an evaluation batch: the image's, and with tta_flip its mirror's; from its cached
        features (N, views, F) when it has them, else from its images."""
        if batch.features is not None:
            views = batch.features.unbind(1)[: 1 + self.hparams.tta_flip]
            return torch.stack([self.head(view).float() for view in views], dim=1)
        return self.image_view_logits(batch.images)

    def image_view_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, views, C) of uint8 images: the image's, and with tta_flip its mirror's."""
        views = (images, images.flip(-1)) if self.hparams.tta_flip else (images,)
        return torch.stack([self(view).float() for view in views], dim=1)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (N, C) of uint8 images; with tta_flip, the mean of the image's and its
        mirror's. Multi-label: each class's own. What ONNX export and serving compute (as OnnxClassifier does)."""
        return calibrated_probs(self.image_view_logits(images), self.temperature, self.hparams.multi_label)

    def batch_probabilities(self, batch: Batch) -> torch.Tensor:
        """`probabilities` of an evaluation batch: of its cached features when it has them, else of its images."""
        return calibrated_probs(self.view_logits(batch), self.temperature, self.hparams.multi_label)

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Predicted classes under the model's decision rule (the most probable class without one); multi-label:
        which classes each image has (N, C), bool."""
        return decide(probs, self.hparams.get("decision"), self.hparams.multi_label)

    def _step(self, batch: Batch, stage: str) -> StepOutput:
        """The loss and metrics of a batch, and what callbacks draw: see StepOutput. In training the features (one
        view each) or the images (mixed with MixUp/CutMix) give the logits; in evaluation every view of them does."""
        labels = targets = batch.targets
        shown = batch.images  # beside cached features: the evaluation images they stand for (None in training)
        if stage == "train":
            hp = self.hparams
            if batch.features is not None:
                logits = self.head(batch.features)
            else:
                if self.mix is not None:  # soft targets; metrics count each mixed image's dominant label
                    shown, targets = self.mix(batch.images.float(), labels)
                    labels = targets.argmax(dim=1)
                logits = self(shown)
            loss = classification_loss(
                logits, targets, hp.loss, self.class_weight, hp.label_smoothing, hp.focal_gamma, hp.multi_label
            )
            probs = logits.detach().float()
            probs = probs.sigmoid() if hp.multi_label else probs.softmax(dim=1)
        elif self.hparams.multi_label:
            probs = self.batch_probabilities(batch)
            loss = loss_of(probs, labels)
        else:  # in log space, as trained
            log_probs = calibrated_log_probs(self.view_logits(batch), self.temperature)
            loss = F.nll_loss(log_probs, labels)
            probs = log_probs.exp()
        predicted = self.decide(probs)
        labels = labels.long()  # multi-label: multi-hot (N, C), as the metrics take them
        getattr(self, f"{stage}_metrics").update(predicted.long(), labels)
        getattr(self, f"{stage}_scores").update(probs, labels)
        if stage == "test":
            self.test_probabilities.append(probs.cpu())
        if stage in self.confusion:
            self.confusion[stage].update(predicted, labels)
        # sync_dist: under DDP every rank logs (and checkpoints by) the mean over all ranks' images.
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=len(labels),
            sync_dist=True,
        )
        return StepOutput(loss, shown, targets.detach(), probs, predicted)

    def training_step(self, batch: Batch, batch_idx: int) -> dict:
        # Lightning takes a tensor or a dict with "loss" from training_step (any object from the evaluation steps);
        # it passes the dict on to on_train_batch_end, so callbacks find the StepOutput under "step".
        step = self._step(batch, "train")
        return {"loss": step.loss, "step": step}

    def validation_step(self, batch: Batch, batch_idx: int) -> StepOutput:
        return self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> StepOutput:
        return self._step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self.batch_probabilities(batch)

    # ---- epoch ends ----------------------------------------------------------------------------
    def on_train_epoch_end(self):
        self._log_epoch("train")

    def on_validation_epoch_end(self):
        values = self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(values[VAL_ACC])
            self.log(VAL_ACC_BEST, self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self):
        self.test_probabilities = []

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> dict:
        values = {}
        for kind in ("metrics", "scores"):
            metrics = getattr(self, f"{stage}_{kind}")
            values |= metrics.compute()
            metrics.reset()
        for name, value in values.items():  # torchmetrics synced them: equal on all ranks
            # On the progress bar the headline ones; every class's own only in the logs and metrics.json.
            headline = stage == "val" and name.rsplit("/", 1)[1] in SINGLE_LABEL + MULTI_LABEL
            self.log(name, value, prog_bar=headline, sync_dist=True)
        if stage in self.confusion:
            matrix = self.confusion[stage].compute().tolist()
            self.confusion[stage].reset()
            self.confusion_matrices[stage] = matrix  # for metrics.json; the pictures: inspection.callback
        return values

    # ---- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        """Every parameter is in a group from the start, frozen or not: freezing only toggles
        requires_grad, so optimizer state and LR schedules survive unfreezing and resuming."""
        groups = []
        for name, part, scale in (
            ("backbone", self.backbone, self.hparams.backbone_lr_factor),
            ("head", self.head, 1.0),
        ):
            params = list(part.parameters())
            # No weight decay on biases and normalisation weights. Names label the LR curves (lr-AdamW/head ...).
            groups.append({"name": name, "params": [p for p in params if p.ndim > 1], "lr_scale": scale})
            no_decay = [p for p in params if p.ndim <= 1]
            groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr_scale": scale, "weight_decay": 0.0})
        optimizer = _configured("model.optimizer", self.hparams.optimizer, [g for g in groups if g["params"]])
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        if not self.hparams.scheduler:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs
        per_epoch = total // epochs if epochs and epochs > 0 else total
        starts = [epoch * per_epoch for epoch in self.hparams.lr_phase_epochs]
        scheduler = _configured(
            "model.scheduler", self.hparams.scheduler, optimizer, total_steps=total, phase_starts=starts
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _configured(option: str, config: dict, *args, **kwargs):
    """The optimizer or scheduler its config describes; settings it rejects are the user's to fix."""
    try:
        return instantiate(config)(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{option} ({config.get('_target_')}) rejects its settings: {error}") from error


def _plain(config):
    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
