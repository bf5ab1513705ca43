"""scripts/benchmark.py writes every figure it promises (its timings are the script's to report, not a test's)."""

import argparse
import json
import sys
from unittest.mock import patch

import pytest
import torch

from tests.helpers.configs import NO_PICTURES
from tests.helpers.scripts import load_script

benchmark_script = load_script("benchmark")


def benchmark(tmp_path, *arguments: str) -> dict:
    """The script run in this process, as `python scripts/benchmark.py --out ... *arguments` (the processes it starts
    are its own)."""
    out = tmp_path / "benchmark.json"
    with patch.object(sys, "argv", ["scripts/benchmark.py", "--out", str(out), *arguments]):
        benchmark_script.main()
    return json.loads(out.read_text())


def test_list_options_leave_the_overrides_after_them_to_the_training_runs():
    """The command the GPU part is run with: `--only gpu` must not take the override after it."""
    args = benchmark_script.arguments(["--only", "gpu", "data.batch_size=128", "--scale-images", "5000,20000"])
    assert args.only == ["gpu"] and args.overrides == ["data.batch_size=128"] and args.scale_images == [5000, 20000]
    assert benchmark_script.arguments(["--only", "loader,scale"]).only == ["loader", "scale"]
    with pytest.raises(SystemExit) as refused:
        benchmark_script.arguments(["--only", "loader,gpus"])
    assert refused.value.code == 2


@pytest.mark.slow  # timing loaders; a process per cache mode
def test_loader_scale_and_gpu_figures(made_up_data, tmp_path):
    results = benchmark(
        tmp_path,
        "--only",
        "loader,scale,gpu",
        "--repeats",
        "1",
        "--scale-images",
        "40",
        f"data.root={made_up_data.root}",
    )
    loader = results["loader"]
    assert loader["images"] == made_up_data.rows and loader["augment"] == "light"
    assert loader["speedup"] == pytest.approx(loader["cache_images_per_s"] / loader["pil_images_per_s"], rel=0.01)
    sizes = results["scale"]["sizes"]
    assert [row["images"] for row in sizes] == [40]
    for row in sizes:
        assert row["cache_mb_on_disk"] > 0 and row["decode_into_cache_s"] >= 0
        assert row["cache_peak_rss_mb"] > 0 and row["memory_peak_rss_mb"] > 0
        assert row["cache_epoch_images"] == row["memory_epoch_images"] > 0
    if not torch.cuda.is_available():
        assert "no CUDA device" in results["gpu"]["skipped"]
    assert (results["environment"]["python"]) and "benchmark.py" in results["command"]


def test_the_gpu_runs_compose_here(tmp_path):
    """The gpu part runs only on a GPU: each of its runs' overrides must compose on any machine."""
    args = argparse.Namespace(gpu_epochs=2, overrides=["data.batch_size=64"])
    runs = benchmark_script.gpu_runs(args, tmp_path)
    configs = {name: benchmark_script.train_config(overrides) for name, overrides in runs.items()}
    assert [cfg.trainer.precision for cfg in configs.values()] == ["32-true", "bf16-mixed", "bf16-mixed"]
    assert [cfg.model.compile for cfg in configs.values()] == [False, False, True]
    for cfg in configs.values():
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_epochs == 2 and cfg.data.batch_size == 64
        assert cfg.callbacks.train_throughput.synchronize is True


@pytest.mark.slow  # two training runs of EfficientNet-Lite0
def test_frozen_recipe_figures(made_up_data, tmp_path):
    frozen = benchmark(
        tmp_path,
        "--only",
        "frozen_recipe",
        "--frozen-epochs",
        "2",
        f"data.root={made_up_data.root}",
        "model.image_size=64",
        NO_PICTURES,
    )["frozen_recipe"]
    assert frozen["epochs"] == 2 and frozen["naive_s"] > 0 and frozen["feature_cache_s"] > 0
    assert frozen["speedup"] == pytest.approx(frozen["naive_s"] / frozen["feature_cache_s"], rel=0.01)
    assert frozen["naive_val_acc"] == frozen["feature_cache_val_acc"]
