"""The GPU path, checked on the CPU: augmentation on the device gives the CPU path's pixels from the same seeds (so
resume stays exact), images of mixed sizes cross padded, bf16-true models take uint8 batches, and compiling the
backbone in place keeps checkpoint keys and finetune stages. A GPU run itself is scripts/benchmark.py's."""

import pytest
import torch

from image_transfer.callbacks.finetune import backbone_stages
from image_transfer.data import ImageDataModule
from image_transfer.data.batch import collate
from image_transfer.data.dataset import ImageDataset
from image_transfer.data.device_augment import DeviceAugment, padded_collate
from image_transfer.models.classifier import ImageClassifier
from image_transfer.train import train
from tests.helpers.configs import QUICK, compose_config
from tests.helpers.images import make_dataset


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """Images of two shapes (48 x 32 and 40 x 56): a batch of them cannot be stacked as they are."""
    root = tmp_path_factory.mktemp("mixed")
    make_dataset(root / "a", count=12, size=(48, 32))
    make_dataset(root / "b", count=12, size=(40, 56), name="tall_{:03d}.png")
    (root / "images").mkdir()
    rows = []
    for part in ("a", "b"):
        for line in (root / part / "train.csv").read_text().splitlines()[1:]:
            name, label = line.split(",")
            (root / "images" / name).symlink_to(root / part / "images" / name)
            rows.append(f"{name},{label}")
    (root / "train.csv").write_text("image_names,emergency_or_not\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_device_augmentation_draws_what_the_cpu_path_draws(mixed_sizes, augment):
    dm = ImageDataModule(root=str(mixed_sizes), image_size=32, augment=augment, val_fraction=0.25)
    dm.setup("fit")
    on_cpu = dm.dataset("train")
    keys = [(i, 1000 + 7 * i) for i in range(len(on_cpu))]
    expected = collate(on_cpu.__getitems__(keys))
    raw = ImageDataset(on_cpu.images, on_cpu.positions, on_cpu.labels)  # what the device path's loader gives
    batch = padded_collate(raw.__getitems__(keys))
    assert len({tuple(size) for size in batch.sizes.tolist()}) == 2  # both shapes in one padded batch
    augmented = DeviceAugment(on_cpu.transform)(batch)
    assert augmented.images.dtype == torch.uint8 and augmented.targets.tolist() == on_cpu.labels
    assert torch.equal(augmented.images, expected.images) and torch.equal(augmented.indices, expected.indices)
    assert augmented.seeds is None and augmented.sizes is None  # as the CPU path's batch


@pytest.mark.slow  # two fits
def test_a_run_that_augments_on_the_device_matches_the_cpu_run(made_up_data, tmp_path):
    metrics = {}
    for where in ("cpu", "device"):
        cfg = compose_config(
            "train", tmp_path / where, [*QUICK, f"data.root={made_up_data.root}", f"data.augment_on={where}"]
        )
        metrics[where] = train(cfg)
    for key in ("train/loss", "val/loss", "val/acc"):
        assert metrics["device"][key] == pytest.approx(metrics["cpu"][key], abs=1e-6), key


def test_seeding_each_image_leaves_the_global_generators_alone(made_up_data, monkeypatch):
    """Dropout draws from the global generators. torch.manual_seed would reseed CUDA's too (which fork_rng does not
    restore), so on a GPU dropout would repeat its masks at every batch: loading may only seed the CPU generator,
    inside a fork."""
    calls = []
    original = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda seed: calls.append(seed) or original(seed))
    dm = ImageDataModule(root=str(made_up_data.root), image_size=32, augment="strong")
    dm.setup("fit")
    original(5)
    before = torch.random.get_rng_state()
    next(iter(dm.train_dataloader()))
    assert calls == [] and torch.equal(torch.random.get_rng_state(), before)


def test_a_bf16_true_model_takes_uint8_images():
    model = ImageClassifier("cnn", num_classes=2, image_size=32, pretrained=False).to(torch.bfloat16).eval()
    logits = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def tiny(compile_: bool) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier("timm/test_efficientnet", 2, image_size=32, pretrained=False, compile=compile_)


def test_compiling_in_place_keeps_checkpoint_keys_and_finetune_stages():
    plain, compiled = tiny(False), tiny(True)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert [type(s) for s in backbone_stages(compiled.backbone)] == [type(s) for s in backbone_stages(plain.backbone)]


@pytest.mark.slow  # torch.compile on the CPU takes about 30 s
def test_a_compiled_backbone_computes_what_the_plain_one_does():
    plain, compiled = tiny(False).eval(), tiny(True).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), plain(images), atol=1e-4, rtol=1e-4)
