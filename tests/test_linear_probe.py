"""scripts/linear_probe.py: no fold is scored by a regression that saw its labels; the script runs end to end."""

import sys
from unittest.mock import patch

import pytest
import torch

from tests.helpers.scripts import load_script

linear_probe = load_script("linear_probe")


def test_a_folds_own_labels_never_reach_its_predictions():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(2, (90,), generator=generator)
    features = torch.randn(90, 8, generator=generator, dtype=torch.float64) + labels[:, None] * 1.5
    fold_of = torch.arange(90) % 3
    probs = linear_probe.out_of_fold_probabilities(features, labels, fold_of, 2)
    flipped = labels.clone()
    flipped[fold_of == 1] = 1 - flipped[fold_of == 1]  # corrupt fold 1's labels only
    again = linear_probe.out_of_fold_probabilities(features, flipped, fold_of, 2)
    assert torch.equal(probs[fold_of == 1], again[fold_of == 1])  # fold 1 is predicted by a model fit without it
    assert not torch.equal(probs[fold_of == 0], again[fold_of == 0])  # the other folds trained on the corrupted labels
    assert min(linear_probe.fold_accuracies(probs, labels, fold_of)) > 0.8  # separable data is learnt


@pytest.mark.slow  # the real data
def test_the_probe_prints_a_row_per_model_and_their_mean(shared_data, capsys):
    command = [
        "scripts/linear_probe.py",
        "--models",
        "efficientnet_lite0",
        "efficientnet_lite0",
        "--folds",
        "3",
        f"data.root={shared_data}",
        "data.subset=60",
        "model.image_size=64",
    ]
    with patch.object(sys, "argv", command):  # in this process, as `python scripts/linear_probe.py ...`
        linear_probe.main()
    stdout = capsys.readouterr().out
    table = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert table[0].startswith("| features | image size | fold 0 | fold 1 | fold 2 | 3-fold mean ± std")
    assert [row.split(" | ")[0] for row in table[1:]] == ["| efficientnet_lite0 (frozen) + logistic regression"] * 2 + [
        "| mean probability of the models above"
    ]
    for row in table[1:]:
        assert all(0 <= float(cell) <= 1 for cell in row.split(" | ")[2:5])
