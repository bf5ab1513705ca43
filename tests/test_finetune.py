"""Each strategy trains exactly the parameters it should: checked with a real optimizer step, on a tiny
EfficientNet of the same layout with made-up images (fast) and on EfficientNet-Lite0 with real images (slow)."""

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from image_transfer.callbacks.finetune import FinetuneSchedule, backbone_stages
from image_transfer.data import ImageDataModule
from image_transfer.data.batch import Batch
from image_transfer.models.classifier import ImageClassifier
from tests.helpers.images import blocks


class Subject(NamedTuple):
    backbone: str
    pretrained: bool
    image_size: int
    batch: Batch  # uint8 images, class indices

    def model(self, **kwargs) -> ImageClassifier:
        return ImageClassifier(
            self.backbone,
            num_classes=2,
            image_size=self.image_size,
            pretrained=self.pretrained,
            scheduler=None,
            **kwargs,
        )


@pytest.fixture(scope="module", params=["tiny", pytest.param("lite0", marks=pytest.mark.slow)])
def subject(request) -> Subject:
    if request.param == "lite0":
        dm = ImageDataModule(root=str(request.getfixturevalue("shared_data")), subset=32, image_size=96, batch_size=16)
        dm.setup("fit")
        return Subject("efficientnet_lite0", True, 96, next(iter(dm.train_dataloader())))
    # timm's test_efficientnet: EfficientNet's stem, blocks, head conv and BatchNorms, with 0.1 M parameters.
    images = torch.stack([torch.from_numpy(np.array(blocks(i, (64, 64)))).permute(2, 0, 1) for i in range(16)])
    return Subject("timm/test_efficientnet", False, 64, Batch(torch.arange(16), torch.tensor([0, 1] * 8), images))


def one_step(model: ImageClassifier, batch) -> dict[str, torch.Tensor]:
    """Snapshot every parameter and buffer, take one real optimizer step, return the snapshot."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = model.configure_optimizers()  # scheduler=None: the bare optimizer, all parameter groups
    model.train()
    loss = nn.functional.cross_entropy(model(batch.images), batch.targets)
    loss.backward()
    optimizer.step()
    return before


def changed(model, before) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def stage_keys(model, stages) -> set[str]:
    ids = {id(t) for s in stages for t in [*s.parameters(), *s.buffers()]}
    return {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids}


@pytest.mark.parametrize(
    "unfreeze_at, epoch, top_fraction",
    [([], 5, 0.0), ([0], 0, 1.0), ([2], 1, 0.0), ([2], 2, 1.0), ([1, 2, 3], 1, 1 / 3), ([1, 2, 3], 2, 2 / 3)],
    ids=["frozen", "full", "freeze_unfreeze-head", "freeze_unfreeze-all", "gradual-1", "gradual-2"],
)
def test_strategy_trains_exactly_its_parameters(subject, unfreeze_at, epoch, top_fraction):
    model = subject.model(
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.1}
    )
    FinetuneSchedule(unfreeze_at).apply(model, epoch)
    stages = backbone_stages(model.backbone)
    expected_trainable = FinetuneSchedule(unfreeze_at).trainable_stages(stages, epoch)
    assert abs(len(expected_trainable) - top_fraction * len(stages)) < 1  # stages split in near-equal chunks
    top = stages[len(stages) - len(expected_trainable) :]
    assert {id(s) for s in expected_trainable} == {id(s) for s in top}  # unfrozen from the top

    before = one_step(model, subject.batch)
    moved = changed(model, before)
    trainable_keys = stage_keys(model, expected_trainable)
    frozen_keys = {k for k in before if k.startswith("backbone.")} - trainable_keys
    assert not moved & frozen_keys, "frozen weights or BatchNorm statistics changed"
    assert {k for k in moved if k.startswith("head.")} == {"head.1.weight", "head.1.bias"}
    # Every trainable weight moved, and BatchNorm statistics of trainable stages updated.
    trainable_tensors = {k for k in trainable_keys if not k.endswith("num_batches_tracked")}
    assert trainable_tensors <= moved
    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.training == module.weight.requires_grad


def test_parameter_counts_follow_the_schedule(subject):
    model = subject.model()
    schedule = FinetuneSchedule([2])
    head = sum(p.numel() for p in model.head.parameters())
    schedule.apply(model, 0)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == head
    schedule.apply(model, 2)
    assert all(p.requires_grad for p in model.parameters())


def test_fixed_bn_statistics_while_bn_weights_train(subject):
    model = subject.model()
    FinetuneSchedule([0], train_bn_stats=False).apply(model, 0)
    before = one_step(model, subject.batch)
    moved = changed(model, before)
    assert not {k for k in moved if "running_" in k or "num_batches_tracked" in k}
    assert "backbone.bn2.weight" in moved and "backbone.conv_stem.weight" in moved
