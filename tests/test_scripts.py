"""Every script in scripts/ imports, parses its arguments and uses only the package's public names; the cores that
other tests leave to the slow tier run here on made-up inputs (fast tier: no ../shared, no network)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from unittest.mock import patch

import pytest
import torch
from omegaconf import OmegaConf

from image_transfer.models.metric_names import VAL_ACC
from tests.helpers.scripts import SCRIPTS, load_script


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_answers_help(path, capsys):
    script = load_script(path.stem)
    with patch.object(sys, "argv", [path.name, "--help"]), pytest.raises(SystemExit) as exit:
        script.main()
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_scripts_use_only_public_names_of_the_package(path):
    private = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("image_transfer"):
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        if isinstance(node, ast.Import):
            private += [a.name for a in node.names if a.name.startswith("image_transfer") and "._" in a.name]
    assert not private, f"{path.name} imports private names: {private}"
    assert "image_transfer" in path.read_text()  # each script runs on the package, not a copy of it


def test_reproduce_tabulates_a_run_from_its_config_and_metrics(tmp_path):
    reproduce = load_script("reproduce")
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    config = {
        "model": {"backbone": "cnn", "image_size": 32},
        "finetune": {"strategy": "gradual", "unfreeze_at_epochs": [1, 2]},
        "trainer": {"max_epochs": 3},
        "data": {"folds": 5, "fold": None},
    }
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    (run_dir / "metrics.json").write_text(json.dumps({VAL_ACC: 0.9, f"{VAL_ACC}_std": 0.01, "train/acc": 0.95}))
    row = reproduce.result_row({"experiment": "x", "overrides": ["a=1"]}, run_dir, "abc")
    assert (row["finetune"], row["epochs"], row["folds"], row["val_acc"], row["val_acc_std"], row["status"]) == (
        "gradual",
        3,
        5,
        0.9,
        0.01,
        "ok",
    )


def test_crossfit_fits_each_folds_temperature_on_the_others():
    crossfit = load_script("crossfit_calibration").crossfit
    generator = torch.Generator().manual_seed(0)
    folds = []
    for _ in range(3):
        labels = torch.randint(0, 2, (40,), generator=generator)
        logits = torch.randn(40, 1, 2, generator=generator) + 4 * torch.nn.functional.one_hot(labels, 2)[:, None]
        folds.append((logits.log_softmax(-1), labels))
    rows = crossfit(folds)
    assert [r[0] for r in rows] == [0, 1, 2, "pooled"] and rows[-1][1] == 120
    assert all(r[2] > 0 for r in rows)  # a temperature per fold, and their mean


def test_bad_input_matrix_reports_what_the_user_sees():
    outcome = load_script("bad_input_matrix").outcome
    failed = subprocess.CompletedProcess([], 1, "", "[log] x\nError: data.root=nope does not exist.\n")
    assert outcome(failed) == "data.root=nope does not exist."
    complete = subprocess.CompletedProcess([], 0, "a - the data set is complete\n", "")
    assert outcome(complete) == "the data set is complete"
