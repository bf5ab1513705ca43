"""The pictures of a run: read back from TensorBoard's event files and the run dir's plots/ (a 3-class made-up data
set, fast; the real data with the default model, slow), the examples a validation epoch keeps, and Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from image_transfer.errors import ConfigError
from image_transfer.inspection.activation_maps import grad_cam, last_feature_layer
from image_transfer.inspection.callback import Inspection
from image_transfer.inspection.examples import EpochExamples
from image_transfer.train import train
from tests.helpers.configs import NO_PICTURES, QUICK, compose_config, without
from tests.helpers.images import make_dataset
from tests.helpers.tensorboard import sessions

CLASSES = ["car", "truck", "ambulance"]
VAL_PICTURES = ["confusion_matrix", "roc", "misclassified_best", "misclassified_last", "activation_maps", "reliability"]
PNGS = {f"{name}.png" for name in [*VAL_PICTURES, "augmented_samples", "test_confusion_matrix", "test_roc"]}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> list[str]:
    root = make_dataset(tmp_path_factory.mktemp("three_classes"), counts={0: 20, 1: 20, 2: 20}, size=(40, 40))
    return [f"data.root={root}", f"data.class_names=[{','.join(CLASSES)}]", "data.val_fraction=0.3"]


def run(run_dir: Path, *overrides: str, logger: bool = False) -> Path:
    quick = without((NO_PICTURES, "~logger") if logger else NO_PICTURES, QUICK)
    train(compose_config("train", run_dir, [*quick, "trainer.max_epochs=2", *overrides]))
    return run_dir


def events(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0}).Reload()


def pr_curve_tags(accumulator: EventAccumulator) -> set[str]:
    tags = accumulator.Tags()["tensors"]
    return {t for t in tags if accumulator.SummaryMetadata(t).plugin_data.plugin_name == "pr_curves"}


def test_three_classes_end_to_end_with_mixup(tmp_path, three_classes):
    run_dir = run(tmp_path, *three_classes, "model.mixup_alpha=0.4", logger=True)
    accumulator = events(run_dir)
    images = set(accumulator.Tags()["images"])
    assert {f"val/{name}" for name in VAL_PICTURES} | {"train/augmented_samples", "test/confusion_matrix"} <= images
    assert {f"{stage}/pr_curve/{name}" for stage in ("val", "test") for name in CLASSES} == pr_curve_tags(accumulator)
    # One per validation epoch, none from the sanity check (which runs at step 0, before any training step).
    steps = [event.step for event in accumulator.Images("val/confusion_matrix")]
    assert len(steps) == 2 and min(steps) > 0
    assert [e.step for e in accumulator.Tensors("val/pr_curve/truck")] == steps
    picture = accumulator.Images("val/roc")[0]
    assert picture.width > 300 and picture.encoded_image_string.startswith(b"\x89PNG")
    assert {p.name for p in (run_dir / "plots").iterdir()} == PNGS
    (session,) = sessions(run_dir)  # and its HPARAMS session, with the final metrics of metrics.json
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert session.metrics["val/acc_best"] == pytest.approx(on_disk["val/acc_best"], abs=1e-6)
    assert session.hparams["mixup_alpha"] == pytest.approx(0.4)


def test_without_a_logger_the_pngs_are_still_written_and_activation_maps_switch_off(tmp_path, three_classes):
    run_dir = run(tmp_path, *three_classes, "callbacks.inspection.activation_maps=false")
    assert not (run_dir / "tensorboard").exists()
    assert {p.name for p in (run_dir / "plots").iterdir()} == PNGS - {"activation_maps.png"}


def test_without_validation_only_the_training_picture(tmp_path, three_classes):
    run_dir = run(tmp_path, *three_classes, "data.val_fraction=0")
    assert [p.name for p in (run_dir / "plots").iterdir()] == ["augmented_samples.png"]


def test_a_bad_count_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"callbacks.inspection.misclassified=-1: use a whole number >= 0"):
        Inspection("plots", CLASSES, misclassified=-1)


def test_an_epoch_keeps_only_the_most_confidently_wrong_and_right_images():
    epoch = EpochExamples(num_classes=2, wrong=2, right_per_class=1)
    # Image i is filled with i: which ones were kept can be read off the pixels.
    for first, probs_of_1, labels in (
        (0, [0.9, 0.2, 0.7, 0.4], [0, 0, 1, 1]),  # wrong: image 0 (0.9), 3 (0.6 for class 0)
        (4, [0.95, 0.55, 0.1, 0.8], [0, 1, 0, 1]),  # wrong: image 4 (0.95); right: 6 (0.9 of 0), 7 (0.8 of 1)
    ):
        images = torch.arange(first, first + 4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2)
        probs = torch.tensor(probs_of_1).view(4, 1)
        epoch.add(images, torch.tensor(labels), torch.cat([1 - probs, probs], dim=1))
    assert len(epoch.labels) == 8 and epoch.probs.shape == (8, 2)
    assert [int(image[0, 0, 0]) for image, _, _ in epoch.wrong_ones(5)] == [4, 0]  # 2 kept, most confident first
    assert [(int(image[0, 0, 0]), label) for image, label, _ in epoch.right_ones(5)] == [(6, 0), (7, 1)]


class Blob(nn.Module):
    """Class 0's logit is the mean brightness of a feature map, class 1's its negative."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.backbone[0].weight.fill_(1 / 27)
            self.backbone[0].bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
            self.head.bias.zero_()

    def forward(self, images):
        return self.head(self.backbone(images.float() / 255))


def test_grad_cam_points_at_the_evidence_and_leaves_the_model_as_it_was():
    model = Blob().train()
    model.backbone.requires_grad_(False)  # a frozen backbone still gets its map
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[0, :, 2:10, 20:30] = 255  # top right
    images[1, :, 22:30, 2:10] = 255  # bottom left
    assert last_feature_layer(model, model.backbone, images) is model.backbone[1]  # the ReLU: last spatial output
    maps = grad_cam(model, model.backbone, images, torch.tensor([0, 0]))
    assert maps.shape == (2, 32, 32) and (maps >= 0).all()
    assert maps[0, :16, 16:].sum() > 10 * maps[0, 16:, :16].sum()
    assert maps[1, 16:, :16].sum() > 10 * maps[1, :16, 16:].sum()
    assert grad_cam(model, model.backbone, images, torch.tensor([1, 1])).max() == 0  # evidence against class 1
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_the_default_model_on_real_data_draws_its_pictures(tmp_path, shared_data):
    """What the checker runs: python -m image_transfer.train data.subset=200 trainer.max_epochs=2."""
    train(compose_config("train", tmp_path, ["data.subset=200", "trainer.max_epochs=2"]))
    accumulator = events(tmp_path)
    assert len(accumulator.Tags()["images"]) >= 3
    assert {"val/pr_curve/emergency", "val/pr_curve/non_emergency"} <= pr_curve_tags(accumulator)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == PNGS
