"""Flip test-time augmentation and the mean-probability ensemble of several checkpoints: of the baseline CNN on
made-up data (fast), and of the default model on the real data (slow)."""

from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from image_transfer.errors import UserError
from image_transfer.models.classifier import ImageClassifier
from image_transfer.predict import predict
from image_transfer.train import train
from tests.helpers.configs import TINY, compose_config
from tests.helpers.files import read_csv


def test_flip_tta_is_the_mean_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=2, image_size=32, pretrained=False, tta_flip=True).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        tta = model.probabilities(images)
        plain = model(images).softmax(1), model(images.flip(-1)).softmax(1)
        mirrored = model.probabilities(images.flip(-1))
    assert torch.allclose(tta, (plain[0] + plain[1]) / 2, atol=1e-6)
    assert torch.allclose(tta, mirrored, atol=1e-6) and not torch.allclose(plain[0], plain[1], atol=1e-4)


def test_mixing_gives_soft_targets_and_still_learns_from_a_batch():
    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=2, image_size=32, pretrained=False, mixup_alpha=0.4, cutmix_alpha=1.0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    mixed, targets = model.mix(images.float(), torch.tensor([0, 1] * 4))
    assert targets.shape == (8, 2) and torch.allclose(targets.sum(1), torch.ones(8))
    assert ((targets > 0) & (targets < 1)).any() and not torch.equal(mixed, images.float())


class Checkpoints(NamedTuple):
    paths: list[Path]  # last.ckpt of two runs with seeds 1 and 2, in <parent>/seed<N>/checkpoints
    data: list[str]  # the data.root override ([]: the real data)


@pytest.fixture(scope="module", params=["made_up_cnn", pytest.param("real", marks=pytest.mark.slow)])
def two_checkpoints(request, tmp_path_factory) -> Checkpoints:
    if request.param == "real":
        request.getfixturevalue("shared_data")
        data, model = [], []
    else:
        data, model = [f"data.root={request.getfixturevalue('made_up_data').root}"], ["model=cnn"]
    parent, paths = tmp_path_factory.mktemp(f"ensemble_{request.param}"), []
    for seed in (1, 2):
        run_dir = parent / f"seed{seed}"
        train(
            compose_config(
                "train",
                run_dir,
                TINY
                + [
                    "finetune=frozen",
                    "trainer.max_epochs=1",
                    f"seed={seed}",
                    "data.subset=64",
                    "model.image_size=64",
                    "test=false",
                    *data,
                    *model,
                ],
            )
        )
        paths.append(run_dir / "checkpoints" / "last.ckpt")
    return Checkpoints(paths, data)


def _predict(tmp_path, ckpt_path: str, *overrides: str) -> list[dict]:
    source = tmp_path / "few.csv"
    source.write_text("image_names\n1.jpg\n2.jpg\n5.jpg\n")
    cfg = compose_config(
        "predict",
        tmp_path,
        [
            f"ckpt_path={ckpt_path}",
            f"source={source}",
            "trainer.accelerator=cpu",
            f"output={tmp_path}/out_{abs(hash(ckpt_path + str(overrides)))}.csv",
            *overrides,
        ],
    )
    return read_csv(predict(cfg))


@pytest.mark.slow  # two fits
def test_predict_averages_the_probabilities_of_several_checkpoints(two_checkpoints, tmp_path):
    (one, two), data = two_checkpoints
    first, second = (_predict(tmp_path, str(p), *data) for p in (one, two))
    both = _predict(tmp_path, f"[{one},{two}]", *data)
    pattern = _predict(tmp_path, f"{one.parents[2]}/seed*/checkpoints/last.ckpt", *data)
    assert both == pattern
    for a, b, mean in zip(first, second, both):
        expected = (float(a["prob_emergency"]) + float(b["prob_emergency"])) / 2
        assert float(mean["prob_emergency"]) == pytest.approx(expected, abs=2e-6)
    assert first != second


@pytest.mark.slow  # two fits
def test_submission_format(two_checkpoints, tmp_path):
    (one, _), data = two_checkpoints
    rows = _predict(tmp_path, str(one), "probabilities=false", "tta_flip=true", *data)
    assert list(rows[0]) == ["image_names", "emergency_or_not"] and len(rows) == 3


def test_missing_checkpoints(tmp_path):
    """A pattern that matches no checkpoint is refused before any data is read."""
    with pytest.raises(UserError, match="matches no file"):
        _predict(tmp_path, str(tmp_path / "nowhere" / "fold_*" / "best.ckpt"))
