"""Calibration measured on images no temperature was fitted on, from a cross-validation run (train data.folds=K).

    python scripts/crossfit_calibration.py logs/train/runs/<time>

Each fold's best checkpoint predicts its own held-out fold without its temperature (eval calibrated=false, into
<run dir>/crossfit/fold_<i>); a temperature fitted on the other folds' predictions is applied to it, so no image is
scored by a temperature fitted on it (the logarithms of the probabilities stand for the logits). Prints, per fold and
pooled, the expected calibration error (15 bins, top label) and NLL before and after, and the accuracy, which one
temperature leaves unchanged. Two or more classes, one label per image.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from image_transfer import CONFIG_DIR
from image_transfer.eval import evaluate
from image_transfer.markdown import table
from image_transfer.models.calibration import calibrated_probs, calibration_scores, fit_temperature
from image_transfer.runs.checkpoints import load_classifier
from image_transfer.runs.outputs import TEST_PREDICTIONS_FILE


def held_out_logits(run_dir: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per fold: (log-probabilities (N, 1, C) of its held-out images before calibration, their labels)."""
    checkpoints = sorted(run_dir.glob("fold_*/checkpoints/best.ckpt"), key=lambda p: int(p.parts[-3][5:]))
    if len(checkpoints) < 2:
        raise SystemExit(f"{run_dir}: no fold_<i>/checkpoints/best.ckpt; give the run dir of train data.folds=K.")
    folds = []
    for checkpoint in checkpoints:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose("eval", overrides=[f"ckpt_path={checkpoint}", "calibrated=false"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir / "crossfit" / checkpoint.parts[-3])
        evaluate(cfg)
        classes = list(load_classifier(str(checkpoint), cfg).hparams.class_names)
        with open(Path(cfg.paths.output_dir) / TEST_PREDICTIONS_FILE, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        header, rows = rows[0], rows[1:]
        columns = [header.index(f"prob_{c}") for c in classes]
        probs = torch.tensor([[float(row[i]) for i in columns] for row in rows])
        labels = torch.tensor([classes.index(row[-1]) for row in rows])  # the last column: true_<label>
        folds.append((probs.clamp(min=1e-12).log().unsqueeze(1), labels))
    return folds


def crossfit(folds: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list]:
    """Rows: fold, images, its temperature (fitted on the other folds), ECE and NLL before and after, accuracy."""
    rows, pooled = [], {"before": [], "after": []}
    for k, (logits, labels) in enumerate(folds):
        others = [f for i, f in enumerate(folds) if i != k]
        temperature = fit_temperature(torch.cat([f[0] for f in others]), torch.cat([f[1] for f in others]))
        before = calibrated_probs(logits, torch.ones_like(temperature))
        after = calibrated_probs(logits, temperature)
        pooled["before"].append(before)
        pooled["after"].append(after)
        scores = [calibration_scores(p, labels) for p in (before, after)]
        accuracy = float((after.argmax(1) == labels).float().mean())
        rows.append([k, len(labels), temperature[0].item(), *[s[m] for m in ("ece", "nll") for s in scores], accuracy])
    labels = torch.cat([f[1] for f in folds])
    scores = [calibration_scores(torch.cat(pooled[w]), labels) for w in ("before", "after")]
    mean_t = statistics.fmean(r[2] for r in rows)
    accuracy = float((torch.cat(pooled["after"]).argmax(1) == labels).float().mean())
    return rows + [["pooled", len(labels), mean_t, *[s[m] for m in ("ece", "nll") for s in scores], accuracy]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a cross-validation run dir (holding fold_<i>/)")
    rows = crossfit(held_out_logits(parser.parse_args().run_dir))
    header = ["fold", "images", "temperature", "ECE before", "ECE after", "NLL before", "NLL after", "accuracy"]
    print(table(header, [[f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in rows]))


if __name__ == "__main__":
    main()
