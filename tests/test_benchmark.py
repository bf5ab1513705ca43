"""scripts/benchmark.py writes every figure it promises (its timings are the script's to report, not a test's)."""

import json
import subprocess
import sys

import pytest
import torch

from vehicle_transfer import PROJECT_ROOT


def benchmark(tmp_path, *arguments: str) -> dict:
    out = tmp_path / "benchmark.json"
    command = [sys.executable, "scripts/benchmark.py", "--out", str(out), *arguments]
    subprocess.run(command, cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())


def test_loader_scale_and_gpu_figures(made_up_data, tmp_path):
    results = benchmark(
        tmp_path,
        "--only", "loader", "scale", "gpu", "--repeats", "1", "--scale-images", "40", f"data.root={made_up_data.root}",
    )  # fmt: skip
    loader = results["loader"]
    assert loader["images"] == made_up_data.rows and loader["augment"] == "light"
    assert loader["speedup"] == pytest.approx(loader["cache_images_per_s"] / loader["pil_images_per_s"], rel=0.01)
    sizes = results["scale"]["sizes"]
    assert [row["images"] for row in sizes] == [10, 40]
    for row in sizes:
        assert row["cache_mb_on_disk"] > 0 and row["decode_into_cache_s"] >= 0
        assert row["cache_peak_rss_mb"] > 0 and row["memory_peak_rss_mb"] > 0
        assert row["cache_epoch_images"] == row["memory_epoch_images"] > 0
    if not torch.cuda.is_available():
        assert "no CUDA device" in results["gpu"]["skipped"]
    assert (results["environment"]["python"]) and "benchmark.py" in results["command"]


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
    )["frozen_recipe"]
    assert frozen["epochs"] == 2 and frozen["naive_s"] > 0 and frozen["feature_cache_s"] > 0
    assert frozen["speedup"] == pytest.approx(frozen["naive_s"] / frozen["feature_cache_s"], rel=0.01)
    assert frozen["naive_val_acc"] == frozen["feature_cache_val_acc"]
