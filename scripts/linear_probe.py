"""Linear probe: how far frozen ImageNet features go on the data set, in minutes instead of an hour.

    python scripts/linear_probe.py [--models efficientnet_lite0 efficientnet_lite1 ...] [--folds 5] [OVERRIDE ...]

For each model config (configs/model/NAME.yaml) every labelled image is embedded once by the frozen
pretrained backbone at the model's image size (the mean of the image's and its mirror's features).
An L2-regularised logistic regression (a fixed strength: nothing is tuned on the folds it is scored
on) is fitted on the other folds and scored on each fold of the same content-grouped, stratified
folds that `data.folds=K` training uses. With several models, a last row averages their
probabilities. Prints a markdown table: accuracy per fold, mean ± std, and images decoded and
embedded per second.
Extra arguments are overrides of the train config, e.g. data.root=/path/to/data.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import keep_freed_memory
from image_transfer.data.disk_cache import cache_root
from image_transfer.data.feature_cache import embed_views
from image_transfer.data.image_store import load_images
from image_transfer.data.table import DataError
from image_transfer.markdown import table as markdown_table  # main's `table` is the data set's

L2 = 1e-2  # on standardised features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="train config overrides, e.g. data.root=...")
    args = parser.parse_args()
    keep_freed_memory()  # as the entry points do: CPU inference page-faults less

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        configs = [
            compose("train", overrides=[f"model={name}", f"data.folds={args.folds}", *args.overrides])
            for name in args.models
        ]
    datamodule = instantiate(configs[0].data)  # the table and its folds are the same for every model
    table = datamodule.table
    fold_of, labels = torch.tensor(datamodule.folds_of(table)), torch.tensor(table.labels)
    hashes = datamodule.content_hashes(table)

    rows, probabilities = [], []
    for name, cfg in zip(args.models, configs):
        size = cfg.model.image_size
        start = time.perf_counter()
        features = embed_all(instantiate(cfg.model), table, hashes, size, cfg)
        speed = len(table) / (time.perf_counter() - start)
        probs = out_of_fold_probabilities(features, labels, fold_of, len(cfg.data.class_names))
        probabilities.append(probs)
        rows.append((f"{name} (frozen) + logistic regression", size, fold_accuracies(probs, labels, fold_of), speed))
        print(f"{name}: embedded {len(table)} images at {size} px, {speed:.1f} img/s", flush=True)
    if len(probabilities) > 1:
        mean = torch.stack(probabilities).mean(0)
        rows.append(("mean probability of the models above", "", fold_accuracies(mean, labels, fold_of), None))
    print(markdown(rows, args.folds))


def embed_all(model: nn.Module, table, hashes: list[str], size: int, cfg) -> torch.Tensor:
    """The mean features of each image and its mirror, through the training runs' own image cache."""
    images, failed = load_images(table.paths, table.names, hashes, size, cache_root(cfg.data.cache_dir))
    if failed:
        raise DataError(f"{len(failed)} image(s) could not be read:\n  " + "\n  ".join(failed.values()))
    return embed_views(model, images, list(range(len(images))), 2, size, cfg.data.batch_size).mean(1).double()


def out_of_fold_probabilities(
    features: torch.Tensor, labels: torch.Tensor, fold_of: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Each image's class probabilities from the regression fitted on the other folds."""
    probs = torch.zeros(len(labels), num_classes, dtype=torch.float64)
    for fold in fold_of.unique():
        train, val = fold_of != fold, fold_of == fold
        mean, std = features[train].mean(0), features[train].std(0) + 1e-6
        head = fit_logistic((features[train] - mean) / std, labels[train], num_classes)
        with torch.no_grad():
            probs[val] = head((features[val] - mean) / std).softmax(1)
    return probs


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> nn.Linear:
    head = nn.Linear(features.shape[1], num_classes, dtype=torch.float64)
    nn.init.zeros_(head.weight)  # a convex problem: a fixed start makes the fit deterministic
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(head(features), labels) + L2 * head.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return head


def fold_accuracies(probs: torch.Tensor, labels: torch.Tensor, fold_of: torch.Tensor) -> list[float]:
    correct = probs.argmax(1) == labels
    return [correct[fold_of == fold].double().mean().item() for fold in fold_of.unique()]


def markdown(rows: list, folds: int) -> str:
    header = [
        "features",
        "image size",
        *(f"fold {i}" for i in range(folds)),
        f"{folds}-fold mean ± std",
        "decode + embed img/s",
    ]
    body = []
    for name, size, accuracies, speed in rows:
        summary = f"{statistics.fmean(accuracies):.4f} ± {statistics.stdev(accuracies):.4f}"
        body.append([name, size, *(f"{a:.4f}" for a in accuracies), summary, f"{speed:.1f}" if speed else ""])
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
