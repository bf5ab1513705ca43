"""Cached backbone features for a backbone that never trains: the same run as on images (metrics, predictions, a
checkpoint that predicts from images), kept on disk keyed by the backbone's weights, used only where exact."""

import re

import pytest
import torch
from omegaconf import open_dict

from image_transfer.data.disk_cache import cache_root
from image_transfer.data.feature_cache import cached_features
from image_transfer.data.image_store import load_images
from image_transfer.data.split import content_hash
from image_transfer.errors import ConfigError
from image_transfer.eval import evaluate
from image_transfer.models.classifier import ImageClassifier
from image_transfer.runs.feature_mode import feature_views
from image_transfer.train import train
from tests.helpers.configs import compose_config
from tests.helpers.files import read_csv

# EfficientNet-Lite0 with its real ImageNet weights, frozen, on the made-up images at 64 px.
FROZEN = [
    "model=efficientnet_lite0",
    "finetune=frozen",
    "model.image_size=64",
    "model.tta_flip=true",
    "data.augment=flip",
    "data.batch_size=16",
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "callbacks.inspection.activation_maps=false",
]


@pytest.fixture(scope="module")
def frozen_runs(made_up_data, tmp_path_factory):
    """The same frozen run twice: the backbone run every epoch, and the head trained on cached features."""
    runs = {}
    for option in ("false", "true"):
        run_dir = tmp_path_factory.mktemp(f"feature_cache_{option}")
        cfg = compose_config(
            "train", run_dir, [*FROZEN, f"data.root={made_up_data.root}", f"data.feature_cache={option}"]
        )
        runs[option] = run_dir, train(cfg)
    return runs


@pytest.mark.slow  # two fits
def test_training_on_cached_features_is_the_run_on_images(frozen_runs):
    (images_dir, on_images), (features_dir, on_features) = frozen_runs["false"], frozen_runs["true"]
    for key in ("val/acc", "val/acc_best", "test/acc", "train/acc"):
        assert on_features[key] == on_images[key], key
    for key in ("val/loss", "test/loss", "train/loss", "val/auroc"):
        assert on_features[key] == pytest.approx(on_images[key], abs=1e-5), key
    image_rows, feature_rows = (
        read_csv(images_dir / "test_predictions.csv"),
        read_csv(features_dir / "test_predictions.csv"),
    )
    assert [r["image_names"] for r in image_rows] == [r["image_names"] for r in feature_rows]
    for a, b in zip(image_rows, feature_rows):
        for column in [c for c in a if c.startswith("prob_")]:
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-5)
    assert on_features["train/images_per_s"] > on_images["train/images_per_s"]
    assert (features_dir / "plots" / "misclassified_last.png").is_file()  # the evaluation images still travel


@pytest.mark.slow  # two fits
def test_the_checkpoint_of_a_feature_run_predicts_from_images(frozen_runs, made_up_data, tmp_path):
    run_dir, metrics = frozen_runs["true"]
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert any(k.startswith("backbone.") for k in checkpoint["state_dict"])  # backbone and head, as ever
    cfg = compose_config(
        "eval", tmp_path, [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"data.root={made_up_data.root}"]
    )
    assert evaluate(cfg)["test/acc"] == metrics["test/acc"]


def test_features_are_kept_on_disk_keyed_by_the_backbone_weights(made_up_data, tmp_path):
    root = made_up_data.root
    paths = sorted((root / "images").iterdir())[:20]
    images, _ = load_images(paths, [p.name for p in paths], [content_hash(p) for p in paths], 64, tmp_path)
    model = ImageClassifier("efficientnet_lite0", num_classes=2, image_size=64)
    positions = list(range(len(paths)))

    def features(views=2):
        return cached_features(model, images, positions, views, 64, 8, (tmp_path, images.folder.name))

    first = features()
    assert first.shape == (20, 2, model.head[1].in_features)
    assert not torch.equal(first[:, 0], first[:, 1])  # the mirror is another view
    entries = lambda: sorted(p.name for p in (tmp_path / "features").iterdir() if not p.name.startswith("."))  # noqa: E731
    entry = entries()
    assert torch.equal(features(), first) and entries() == entry  # read back, not computed again
    features(views=1)
    assert len(entries()) == 2
    with torch.no_grad():
        next(model.backbone.parameters()).add_(0.01)  # other weights, other features
    assert not torch.allclose(features(), first) and len(entries()) == 3


def config(tmp_path, *overrides):
    return compose_config("train", tmp_path, ["finetune=frozen", "data.augment=none", *overrides])


@pytest.mark.parametrize(
    "overrides, views",
    [
        ([], 1),
        (["data.augment=flip"], 2),
        (["model.tta_flip=true"], 2),
        (["finetune=freeze_unfreeze"], 0),
        (["data.augment=light"], 0),
        (["model.mixup_alpha=0.2"], 0),
        (["debug=fast_dev_run"], 0),
        (["data.feature_cache=false"], 0),
    ],
)
def test_auto_caches_features_only_where_the_run_stays_the_same(tmp_path, overrides, views):
    assert feature_views(config(tmp_path, *overrides)) == views


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.augment=light", "data.augment=light"),
        ("finetune=freeze_unfreeze", "finetune.unfreeze_at_epochs=[2]"),
        ("model.cutmix_alpha=1.0", "MixUp/CutMix"),
    ],
)
def test_insisting_on_features_where_they_would_differ_is_refused(tmp_path, override, named):
    cfg = config(tmp_path, "data.feature_cache=true", override)
    with pytest.raises(ConfigError, match=re.escape(named)):
        feature_views(cfg)
    with open_dict(cfg):
        cfg.data.feature_cache = "sometimes"
    with pytest.raises(ConfigError, match="data.feature_cache='sometimes'"):
        feature_views(cfg)


def test_the_default_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_TRANSFER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache_root(None) == tmp_path / "elsewhere"
    assert cache_root(str(tmp_path / "given")) == tmp_path / "given"
