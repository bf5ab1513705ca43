"""After fitting: the best checkpoint's temperature, fitted on its validation predictions, and its decision rule,
given or picked on those predictions once calibrated; both written into best.ckpt, so eval, predict, export and
every later use of the checkpoint apply them. Reported with the calibration error and NLL before and after and the
rule's precision and recall on the images it was picked on; the reliability diagram goes beside the other pictures.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device
from omegaconf import DictConfig

from image_transfer.errors import ConfigError
from image_transfer.inspection import figures
from image_transfer.inspection.callback import Inspection
from image_transfer.models.calibration import BINS, METHODS, calibrated_probs, calibration_scores, fit_temperature
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.decision import check_settings, decide, pick_threshold, positive_index, precision_recall
from image_transfer.runs.checkpoints import AtomicCheckpointIO

log = logging.getLogger(__name__)


def check_calibration(cfg: DictConfig, class_names: list[str], validates: bool, multi_label: bool) -> None:
    """Refuse, before training, calibration or decision settings that cannot be applied."""
    method = (cfg.get("calibration") or {}).get("method", "none")
    if method not in METHODS:
        raise ConfigError(f"calibration.method={method}: use {', '.join(METHODS)}.")
    decision = cfg.get("decision") or {}
    check_settings(decision, class_names, multi_label)
    if decision.get("pick") and not validates:
        raise ConfigError(
            f"decision.pick={decision.pick} picks a threshold on validation predictions, and this run has none "
            "(data.val_fraction=0): validate, or give decision.threshold=P."
        )


@torch.no_grad()
def validation_logits(model: ImageClassifier, datamodule, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits (N, views, C) of every validation image, with their labels, at the trainer's precision."""
    model.eval()
    datamodule.setup("validate")  # decoded already, unless fitting ran in other processes (ddp_spawn)
    outputs, labels = [], []
    with trainer.precision_plugin.forward_context():
        for batch in datamodule.val_dataloader():
            outputs.append(model.view_logits(move_data_to_device(batch, model.device)).float().cpu())
            labels.append(batch.targets)
    return torch.cat(outputs), torch.cat(labels)


def calibrate(cfg: DictConfig, model: ImageClassifier, trainer: L.Trainer, datamodule, best: str) -> dict:
    """Fit and store the best checkpoint's temperature and decision rule (without validation images: only a given
    threshold); returns what metrics.json reports."""
    settings, class_names = cfg.get("decision") or {}, list(model.hparams.class_names)
    multi_label = model.hparams.multi_label
    state = torch.load(best, map_location=model.device, weights_only=True)
    model.load_state_dict(state["state_dict"])
    temperature, metrics, probs, labels = torch.ones_like(model.temperature).cpu(), {}, None, None
    if datamodule.validates:
        view_logits, labels = validation_logits(model, datamodule, trainer)
        temperature, metrics = fitted_temperature(cfg, view_logits, labels, trainer, multi_label)
        probs = calibrated_probs(view_logits, temperature, multi_label)
    else:
        log.info("not calibrated: no validation images to fit a temperature on (data.val_fraction=0)")
    decision = decision_rule(settings, probs, labels, class_names, multi_label)
    if decision and probs is not None and not multi_label:
        shown = precision_recall(decide(probs, decision), labels, decision["positive"])
        metrics |= {f"decision/val_{k}": v for k, v in shown.items()}
        log.info(
            "decision: %s when its probability >= %.4f (%s): precision %.3f, recall %.3f on %d validation images",
            decision["positive_class"],
            decision["threshold"],
            decision["rule"],
            shown["precision"],
            shown["recall"],
            len(labels),
        )
    with torch.no_grad():
        model.temperature.copy_(temperature)
    model.hparams.decision = decision
    state["state_dict"]["temperature"] = temperature.to(model.device)
    state["hyper_parameters"]["decision"] = decision
    AtomicCheckpointIO().save_checkpoint(state, best)
    return metrics | {f"decision/{k}": v for k, v in (decision or {}).items() if k != "positive"}


def store_decision(path: str, decision: dict | None) -> None:
    """`decision` in place of a checkpoint's own (written atomically)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["decision"] = decision
    AtomicCheckpointIO().save_checkpoint(state, path)


def fitted_temperature(cfg: DictConfig, view_logits, labels, trainer, multi_label: bool) -> tuple:
    """(temperature, its metrics) per calibration.method, with the reliability diagram."""
    method = (cfg.get("calibration") or {}).get("method", "none")
    uncalibrated = torch.ones(view_logits.shape[-1])
    if method == "none":
        return uncalibrated, {"calibration/method": method}
    if not torch.isfinite(view_logits).all():  # a diverged model: its metrics say so, nothing to calibrate
        log.warning("not calibrated: the best checkpoint's validation logits are not all finite")
        return uncalibrated, {"calibration/method": "none"}
    temperature = fit_temperature(view_logits, labels, per_class=method == "class_temperature")
    before = calibrated_probs(view_logits, uncalibrated, multi_label)
    after = calibrated_probs(view_logits, temperature, multi_label)
    scores = {"before": calibration_scores(before, labels), "after": calibration_scores(after, labels)}
    metrics = {"calibration/method": method, "calibration/bins": BINS, "calibration/images": len(labels)}
    metrics |= {f"calibration/{k}_{when}": v for when, values in scores.items() for k, v in values.items()}
    metrics["calibration/temperature"] = temperature[0].item() if method == "temperature" else temperature.tolist()
    log.info(
        "calibrated on %d validation images: temperature %s, ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        len(labels),
        ", ".join(f"{v:.3f}" for v in temperature.unique().tolist()),
        scores["before"]["ece"],
        scores["after"]["ece"],
        scores["before"]["nll"],
        scores["after"]["nll"],
    )
    draw_reliability(trainer, {"uncalibrated": before, "calibrated": after}, labels)
    return temperature, metrics


def decision_rule(settings, probs, labels, class_names: list[str], multi_label: bool) -> dict | None:
    """The rule decision.* asks for (None: the most probable class; multi-label: 0.5 for each class), picked on
    `probs` where it is to be picked: for multi-label data, class by class."""
    threshold, pick = settings.get("threshold"), settings.get("pick")
    if threshold is None and pick is None:
        return None
    if multi_label:
        if pick is None:
            return {"thresholds": [float(threshold)] * len(class_names), "rule": "given"}
        picked = [pick_threshold(probs[:, c], labels[:, c].bool(), settings) for c in range(len(class_names))]
        return {"thresholds": [t for t, _ in picked], "rule": picked[0][1]}
    positive = positive_index(settings.get("positive"), class_names)
    if pick is None:
        threshold, rule = float(threshold), "given"
    else:
        threshold, rule = pick_threshold(probs[:, positive], labels == positive, settings)
    return {"positive": positive, "positive_class": class_names[positive], "threshold": threshold, "rule": rule}


def draw_reliability(trainer: L.Trainer, curves: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
    """The reliability diagram (of the top label; multi-label: of every class's probability), where the run's
    pictures go (none without the inspection callback)."""
    inspection = next((c for c in trainer.callbacks if isinstance(c, Inspection)), None)
    if inspection is None:
        return
    if labels.ndim == 2:
        outcomes = {name: (probs.flatten(), labels.flatten()) for name, probs in curves.items()}
    else:
        outcomes = {name: (probs.max(1).values, probs.argmax(1) == labels) for name, probs in curves.items()}
    title = f"Validation, best checkpoint: {len(labels)} images"
    inspection.publish(trainer, "val/reliability", figures.render(figures.reliability(outcomes, BINS, title)))


def tested_decision(model: ImageClassifier, labels: list[int]) -> dict:
    """A two-class decision rule's precision and recall on the test images the model has just predicted."""
    decision = model.hparams.get("decision")
    if not decision or "positive" not in decision or not model.test_probabilities:
        return {}
    shown = precision_recall(
        model.decide(torch.cat(model.test_probabilities)), torch.as_tensor(labels), decision["positive"]
    )
    return {f"decision/test_{k}": v for k, v in shown.items()}
