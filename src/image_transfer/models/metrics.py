"""The metrics a classifier logs in each stage, by name (`<stage>/<name>`): of its predicted classes (the decision
rule applied), and of its probabilities.

Single-label: acc, f1 (macro), balanced_acc (macro recall: what accuracy hides under imbalanced classes) and
recall_<class>; auroc and (not in training, whose batches are augmented and mixed) ece, the expected calibration error
of the top label. Multi-label, where each class is a yes/no decision: acc (the share of right decisions), exact_match
(images with every class right), f1 (macro) and f1_<class>; map (mean average precision), auroc and ece (of every
class's probability). The names themselves: models/metric_names.py.
"""

from __future__ import annotations

from torchmetrics import (
    AUROC,
    Accuracy,
    AveragePrecision,
    CalibrationError,
    ExactMatch,
    F1Score,
    MetricCollection,
    Recall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from image_transfer.models.calibration import BINS

# Their names and which way is better live in models/metric_names.py, a module without torchmetrics.


def stage_metrics(stage: str, class_names: list[str], multi_label: bool) -> tuple[MetricCollection, MetricCollection]:
    """(metrics of the predicted classes, metrics of the probabilities), prefixed `<stage>/`."""
    classes = len(class_names)
    if multi_label:
        task = {"task": "multilabel", "num_labels": classes}
        predicted = {
            "acc": Accuracy(**task, average="micro"),
            "exact_match": ExactMatch(**task),
            "f1": F1Score(**task, average="macro"),
            "f1_": ClasswiseWrapper(F1Score(**task, average=None), class_names, prefix="f1_"),
        }
        scored = {"map": AveragePrecision(**task, average="macro"), "auroc": AUROC(**task, average="macro")}
        ece = CalibrationError(task="binary", n_bins=BINS)  # every (image, class) probability
    else:
        task = {"task": "multiclass", "num_classes": classes}
        predicted = {
            "acc": Accuracy(**task),
            "f1": F1Score(**task, average="macro"),
            "balanced_acc": Recall(**task, average="macro"),
            "recall_": ClasswiseWrapper(Recall(**task, average=None), class_names, prefix="recall_"),
        }
        scored = {"auroc": AUROC(**task)}
        ece = CalibrationError(**task, n_bins=BINS)  # the top label, L1
    if stage != "train":
        scored["ece"] = ece
    # No compute groups: a ClasswiseWrapper's inner metric, given a shared state without its update, warns at every
    # epoch that it was computed before an update (its values are right either way).
    predicted = MetricCollection(predicted, prefix=f"{stage}/", compute_groups=False)
    return predicted, MetricCollection(scored, prefix=f"{stage}/")
