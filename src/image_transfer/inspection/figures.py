"""The pictures, as matplotlib Figures built without pyplot (no display, no global figure registry), and their
rendering to RGB pixels: rendered once, the same pixels go to TensorBoard and into a PNG file."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from captum.attr import visualization
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassROC
from torchmetrics.functional.classification import multilabel_average_precision, multilabel_precision_recall_curve

DPI = 100
CAPTION_INCHES, TITLE_INCHES = 0.4, 0.45  # two lines each


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """Counts (left) and each true class's row normalised to 1 (right): recall on the diagonal."""
    figure = Figure(figsize=(5 + 1.6 * len(class_names), 2.8 + 0.8 * len(class_names)), layout="constrained")
    figure.suptitle(title)
    for ax, normalize, heading in zip(figure.subplots(1, 2), (None, "true"), ("counts", "normalised by true class")):
        metric = MulticlassConfusionMatrix(len(class_names), normalize=normalize)
        metric.update(probs, labels)
        metric.plot(ax=ax, labels=class_names)
        ax.set_title(heading)
    return figure


def roc(probs: torch.Tensor, labels: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """One-vs-rest ROC curve of each class, with its area."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    metric = MulticlassROC(len(class_names))
    metric.update(probs, labels)
    ax = figure.subplots()
    metric.plot(score=True, ax=ax, labels=class_names)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")  # chance
    ax.set_title(f"{title}\nROC, one class vs the rest")
    return figure


def pr_curves(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """Multi-label: each class's precision-recall curve, with its average precision."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    targets = targets.long()
    precision, recall, _ = multilabel_precision_recall_curve(probs, targets, len(class_names))
    average = multilabel_average_precision(probs, targets, len(class_names), average=None)
    for name, p, r, ap in zip(class_names, precision, recall, average.tolist()):
        ax.plot(r, p, label=f"{name} (AP {ap:.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"{title}\nprecision-recall per class")
    ax.legend(loc="lower left")
    return figure


def reliability(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], bins: int, title: str) -> Figure:
    """Reliability diagram: per bin of predicted probability, how often the prediction came true against the mean
    probability, for each of `curves` ({"uncalibrated": (probabilities, outcomes 0/1), ...}); a calibrated model
    lies on the diagonal. Point sizes follow the number of predictions in the bin."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="calibrated")
    edges = torch.linspace(0, 1, bins + 1)
    for name, (probability, outcome) in curves.items():
        which = torch.bucketize(probability, edges[1:-1], right=True)  # (lo, hi] bins, as torchmetrics bins them
        count = torch.bincount(which, minlength=bins).double()
        shown = count > 0
        mean_probability = torch.bincount(which, probability.double(), minlength=bins)[shown] / count[shown]
        frequency = torch.bincount(which, outcome.double(), minlength=bins)[shown] / count[shown]
        ax.plot(mean_probability, frequency, marker="o", label=name)
        ax.scatter(mean_probability, frequency, s=10 + 200 * count[shown] / count.sum(), alpha=0.3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency", title=title)
    ax.legend(loc="upper left")
    return figure


def image_grid(images: torch.Tensor, captions: list[str], title: str) -> Figure:
    """Images (N, 3, H, W) on a 0-255 scale (mixed ones may be fractional or overshoot: clipped), captioned."""
    figure, axes = _grid(len(images), title, images.shape[-1])
    pixels = images.detach().float().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for ax, image, caption in zip(axes, pixels, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=8)
    return figure


def activation_maps(images: torch.Tensor, maps: torch.Tensor, captions: list[str], title: str) -> Figure:
    """Each image (N, 3, H, W, uint8) in grey with its class-activation map (N, H, W) over it in colour: where the
    evidence for the predicted class lies."""
    figure, axes = _grid(len(images), title, images.shape[-1])
    for ax, image, heat, caption in zip(axes, images.permute(0, 2, 3, 1).cpu().numpy(), maps.cpu().numpy(), captions):
        if not heat.max() > 0:  # nothing speaks for the class (captum cannot scale an empty map)
            ax.imshow(image)
            ax.set_title(f"{caption}\n(no positive evidence)", fontsize=8)
            continue
        visualization.visualize_image_attr(
            heat,
            image,
            method="blended_heat_map",
            sign="positive",
            plt_fig_axis=(figure, ax),
            cmap="jet",
            alpha_overlay=0.45,
            use_pyplot=False,
        )
        ax.set_title(caption, fontsize=8)
    return figure


def _grid(count: int, title: str, width: int, columns: int = 4) -> tuple[Figure, list]:
    """A titled figure with `count` captioned panels (at least one row) for images `width` pixels wide, shown at
    about their own size (within 1.6 to 2.6 inches: small ones readable, and small runs draw fast), axes hidden.
    Fixed margins: matplotlib's constrained layout would double the time to draw a grid."""
    rows, panel = max(1, math.ceil(count / columns)), min(max(width / DPI, 1.6), 2.6)
    height = (panel + CAPTION_INCHES) * rows + TITLE_INCHES
    figure = Figure(figsize=(panel * columns, height), dpi=DPI)
    figure.suptitle(title, y=1 - 0.08 / height, va="top", fontsize=10)
    margins = {"left": 0.01, "right": 0.99, "bottom": 0.05 / height, "wspace": 0.05}
    margins |= {"top": 1 - (TITLE_INCHES + CAPTION_INCHES) / height, "hspace": CAPTION_INCHES / panel}
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw=margins)
    for ax in axes.flat:
        ax.set_axis_off()
    return figure, list(axes.flat)[:count]


def render(figure: Figure) -> np.ndarray:
    """The figure's pixels (H, W, 3) uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)  # 3x faster than 6, as small on photos
    return buffer.getvalue()
