"""scripts/reproduce.py end to end on a tiny set: a trained row and a cross-validated row, each with its no-TTA
row, a skipped row (one fold), and the fold ensemble's submission.

The set runs offline whether or not this machine is: behind a dead proxy, with Hugging Face's offline switch and
empty weight caches, so VGG16's row is always the skipped one."""

import csv
import os
import subprocess
import sys

import pytest

from image_transfer import PROJECT_ROOT
from image_transfer.runs.environment import git_commit
from tests.helpers.configs import NO_PICTURES, SHARED_DATA

QUICK = (
    "[trainer.max_epochs=1,+trainer.limit_train_batches=2,data.subset=48,model.image_size=48,data.batch_size=16,"
    f"{NO_PICTURES}]"
)
SETS = f"""
tiny:
  title: A tiny set
  submission: true
  rows:
    - experiment: seed_cnn
      overrides: {QUICK}
      published: {{train_acc: 0.8157, val_acc: 0.7626}}
      tta_ablation: true
    - experiment: seed_vgg16_frozen
      overrides: {QUICK[:-1]},data.folds=2,data.fold=1]
    - experiment: lite0_frozen
      overrides: {QUICK[:-1]},data.folds=2]
      tta_ablation: true
"""


DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


def offline_environment(tmp_path) -> dict:
    """This environment as an air-gapped cluster would see it: no weights cached, no way to download any."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ("NO_PROXY", "ALL_PROXY", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
    }
    env |= dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), DEAD_PROXY)
    env |= {"HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf")}
    return env


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_reproduce_tabulates_rows_skips_missing_weights_and_writes_a_submission(shared_data, tmp_path):
    (tmp_path / "sets.yaml").write_text(SETS)
    out = tmp_path / "repro"
    command = [
        sys.executable,
        "scripts/reproduce.py",
        "--set",
        "tiny",
        "--sets",
        str(tmp_path / "sets.yaml"),
        "--out",
        str(out),
        f"data.root={SHARED_DATA}",
        "trainer.accelerator=cpu",
    ]
    commit_before = git_commit()["commit"]
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=offline_environment(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    rows = read_csv(out / "results.csv")
    assert [r["experiment"] for r in rows] == [
        "seed_cnn",
        "seed_cnn",
        "seed_vgg16_frozen",
        "lite0_frozen",
        "lite0_frozen",
    ]
    cnn, cnn_no_tta, vgg, cv, no_tta = rows
    assert cnn["status"] == "ok" and 0 <= float(cnn["val_acc"]) <= 1 and float(cnn["train_images_per_s"]) > 0
    assert (cnn["model"], cnn["finetune"], cnn["epochs"], cnn["image_size"]) == ("cnn", "full", "1", "48")
    assert vgg["status"].startswith("skipped: ") and "vgg16" in vgg["status"] and vgg["model"] == "vgg16"
    assert "\\'" not in vgg["status"]  # the reason as written, not as the repr in Hydra's error
    assert vgg["folds"] == "" and cnn["folds"] == ""  # one fold of K is a single split, not a CV result
    assert cv["folds"] == "2" and cv["val_acc_std"] != "" and "no flip TTA" in no_tta["overrides"]
    assert no_tta["val_acc_std"] != "" and no_tta["run_dir"].endswith("eval_no_tta/fold_*")
    # a single run's no-TTA row: its one checkpoint re-scored on the same validation images
    assert "no flip TTA" in cnn_no_tta["overrides"] and cnn_no_tta["val_acc_std"] == ""
    assert 0 <= float(cnn_no_tta["val_acc"]) <= 1 and (out / "runs" / "0" / "eval_no_tta" / "metrics.json").is_file()
    assert not list(out.glob("results.partial.*"))  # the per-row tables are replaced by the final ones
    table = (out / "results.md").read_text()
    assert "0.7626" in table and "skipped" in table and "± " in table
    # the code that made the table: this checkout's commit (then or now), -dirty when the work tree differs from it
    commits = {r["commit"] for r in rows}
    assert len(commits) == 1 and commits.pop().removesuffix("-dirty") in {commit_before, git_commit()["commit"]}
    assert f"Code: commit `{rows[0]['commit']}`" in table.splitlines()[2]

    submission = read_csv(out / "submission.csv")
    expected = [r["image_names"] for r in read_csv(shared_data / "test.csv")]
    assert [r["image_names"] for r in submission] == expected and len(expected) == 706
    assert list(submission[0]) == ["image_names", "emergency_or_not"]
    assert {r["emergency_or_not"] for r in submission} <= {"0", "1"}
