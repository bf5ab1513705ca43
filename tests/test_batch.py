"""The one contract between data and model (data/batch.py): every loader gives a Batch whose set fields say what it
is; the model reads them by name (features, else images), and the finetune schedule changes the model only through
its set_trainable. Fast: made-up images, a tiny EfficientNet."""

import dataclasses

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import nn
from torch.utils.data._utils.pin_memory import pin_memory

from image_transfer.callbacks.finetune import FinetuneSchedule, backbone_stages
from image_transfer.data import ImageDataModule
from image_transfer.data.batch import Batch
from image_transfer.data.device_augment import DeviceAugment
from image_transfer.data.transforms import train_transform
from image_transfer.models.classifier import ImageClassifier

KINDS = ("train", "val", "test", "predict")
SIZE = 32


def tiny_model(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier("timm/test_efficientnet", 2, image_size=SIZE, pretrained=False, scheduler=None, **kwargs)


@pytest.fixture(scope="module")
def frozen():
    """A frozen backbone (finetune=frozen) with flip TTA: what cached features stand in for."""
    model = tiny_model(tta_flip=True)
    FinetuneSchedule([]).apply(model, 0)
    return model.eval()


def first_batches(root, model=None, **options) -> dict[str, Batch]:
    """The first batch of each loader; with `model`, its frozen backbone's cached features (2 views) served."""
    dm = ImageDataModule(
        root=str(root), image_size=SIZE, batch_size=8, num_workers=0, seed=1, predict_source="images", **options
    )
    dm.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    if model is not None:
        dm.serve_features(2, model)
    return {kind: next(iter(getattr(dm, f"{kind}_dataloader")())) for kind in KINDS}


def set_fields(batch: Batch) -> set[str]:
    assert isinstance(batch, Batch)
    return {f.name for f in dataclasses.fields(batch) if getattr(batch, f.name) is not None}


def test_image_loaders_give_images_with_targets_except_to_predict(made_up_data):
    batches = first_batches(made_up_data.root, augment="light", augment_on="cpu")
    for kind in ("train", "val", "test"):
        assert set_fields(batches[kind]) == {"indices", "targets", "images"}, kind
    assert set_fields(batches["predict"]) == {"indices", "images"}
    for kind, batch in batches.items():
        assert batch.images.shape == (8, 3, SIZE, SIZE) and batch.images.dtype == torch.uint8, kind
        assert batch.indices.dtype == torch.int64 and len(batch.indices) == 8, kind
    assert batches["val"].indices.tolist() == list(range(8))  # evaluation: the split's rows in order


def test_the_device_path_crosses_with_seeds_and_sizes_and_arrives_as_the_cpu_path(made_up_data):
    batch = first_batches(made_up_data.root, augment="light", augment_on="device")["train"]
    assert set_fields(batch) == {"indices", "targets", "images", "seeds", "sizes"}
    assert batch.sizes.shape == (8, 2) and batch.seeds.dtype == torch.int64
    moved = move_data_to_device(batch, torch.device("cpu"))  # what Lightning does with it, on any device
    assert isinstance(moved, Batch) and torch.equal(moved.seeds, batch.seeds)
    augmented = DeviceAugment(train_transform(SIZE, "light"))(batch)  # on_after_batch_transfer, in training
    assert set_fields(augmented) == {"indices", "targets", "images"}
    cpu = first_batches(made_up_data.root, augment="light", augment_on="cpu")["train"]
    assert torch.equal(augmented.images, cpu.images) and torch.equal(augmented.indices, cpu.indices)


def test_a_pinned_batch_stays_a_batch(monkeypatch):
    """DataLoader(pin_memory=True) (on a GPU) pins what it knows and calls pin_memory() on anything else."""
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor, *_: pinned.append(tensor) or tensor.clone())
    batch = Batch(torch.arange(2), images=torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    result = pin_memory(batch)
    assert isinstance(result, Batch) and result.targets is None and result.features is None
    assert {id(t) for t in pinned} == {id(batch.indices), id(batch.images)}
    assert torch.equal(result.images, batch.images) and result.images is not batch.images


def test_feature_loaders_give_features_and_the_images_they_stand_for_in_evaluation(made_up_data, frozen):
    batches = first_batches(made_up_data.root, model=frozen, augment="flip")
    features = frozen.head[1].in_features
    assert set_fields(batches["train"]) == {"indices", "targets", "features"}
    assert batches["train"].features.shape == (8, features)  # one view per image
    for kind in ("val", "test"):
        assert set_fields(batches[kind]) == {"indices", "targets", "features", "images"}, kind
        assert batches[kind].features.shape == (8, 2, features), kind  # the image's and its mirror's
    assert set_fields(batches["predict"]) == {"indices", "images"}  # predicting reads images


def test_the_features_of_images_give_their_logits(made_up_data, frozen):
    val = first_batches(made_up_data.root, augment="flip")["val"]
    images, indices = val.images, val.indices
    with torch.no_grad():
        views = torch.stack([frozen.embed(images), frozen.embed(images.flip(-1))], dim=1)
        on_images = Batch(indices, images=images)
        on_features = Batch(indices, features=views)
        assert torch.equal(frozen.view_logits(on_images), frozen.view_logits(on_features))
        assert torch.equal(frozen.batch_probabilities(on_images), frozen.batch_probabilities(on_features))
        assert torch.equal(frozen.predict_step(on_features, 0), frozen.probabilities(images))
        # Training takes one view's features where it would take the images.
        assert torch.equal(frozen.head(views[:, 0]), frozen(images))
    # The loader's own cached features (computed in other batches) give the logits of the images they stand for.
    cached = first_batches(made_up_data.root, model=frozen, augment="flip")["val"]
    with torch.no_grad():
        torch.testing.assert_close(
            frozen.view_logits(cached),
            frozen.view_logits(Batch(cached.indices, images=cached.images)),
            rtol=0,
            atol=1e-5,
        )


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def trainable(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def test_the_schedule_changes_the_model_only_through_set_trainable(monkeypatch):
    model = tiny_model().train()
    before_modes, before_trainable = modes(model), trainable(model)
    calls = []
    monkeypatch.setattr(model, "set_trainable", lambda stages, bn_stats_frozen: calls.append((stages, bn_stats_frozen)))
    FinetuneSchedule([1, 2], train_bn_stats=False).apply(model, 1)
    stages = backbone_stages(model.backbone)
    ((given, bn_stats_frozen),) = calls
    assert [id(s) for s in given] == [id(s) for s in FinetuneSchedule([1, 2]).trainable_stages(stages, 1)]
    assert bn_stats_frozen is True
    assert modes(model) == before_modes and trainable(model) == before_trainable  # nothing else touched


def batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_set_trainable_sets_requires_grad_and_batchnorm_modes():
    model = tiny_model().train()
    stages = backbone_stages(model.backbone)
    schedule = FinetuneSchedule([1, 2])

    schedule.apply(model, 0)  # the head alone: the backbone a fixed feature extractor, wholly in eval mode
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not any(m.training for m in model.backbone.modules()) and model.head.training

    schedule.apply(model, 1)  # the top half of the stages trains, their BatchNorm statistics too
    top = schedule.trainable_stages(stages, 1)
    assert 0 < len(top) < len(stages)
    for stage in stages:
        trains = any(stage is t for t in top)
        assert all(p.requires_grad == trains for p in stage.parameters())
        assert all(bn.training == trains for bn in batchnorms(stage))

    FinetuneSchedule([0], train_bn_stats=False).apply(model, 0)  # everything trains; BatchNorm statistics fixed
    assert all(p.requires_grad for p in model.parameters())
    assert not any(bn.training for bn in batchnorms(model.backbone))
    assert model.backbone.conv_stem.training
    model.eval().train()  # Lightning's own mode switches keep them so
    assert not any(bn.training for bn in batchnorms(model.backbone)) and model.backbone.conv_stem.training

    model.eval()
    FinetuneSchedule([0]).apply(model, 0)  # applied to a model in eval mode, it stays there
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(bn.training for bn in batchnorms(model.backbone))
