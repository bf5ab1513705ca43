"""Speed and memory of the data path: each comparison measured side by side in one run on the real data.

    python scripts/benchmark.py [--out PATH] [--only loader,frozen_recipe,scale,gpu,onnx] [OVERRIDE ...]

- loader: training images per second of a PIL + DataLoader baseline against the decoded-image cache, both with the
  light augmentation, the same workers and batch size, interleaved --repeats times (medians). The baseline is
  torchvision's reference default: every access opens and decodes the file with PIL and augments the PIL image
  (then to a tensor); a second baseline decodes with PIL and augments the tensor as the cache path does.
- frozen_recipe: the frozen EfficientNet-Lite0 recipe (experiment=lite0_frozen, no augmentation) for
  --frozen-epochs epochs with the backbone run every epoch (data.feature_cache=false) against the feature cache
  (built cold by this run): each run's own wall time (metrics.json wall_time_s) and val/acc.
- scale: synthetic data sets of each of the --scale-images sizes, written by the script: decoding each into the
  cache (time, size on disk), and the peak resident memory of one training epoch through the disk cache against the
  in-memory path (data.image_cache=false), each in a fresh process.
- gpu: on a CUDA GPU, fine-tuning images per second in fp32 against bf16-mixed with channels_last (and with
  torch.compile), peak GPU memory and the share of step time spent waiting for data; otherwise why it was skipped.
- onnx: the default model (EfficientNet-Lite0 and its head) exported to ONNX, run by ONNX Runtime against PyTorch on
  this machine's CPU: batch-1 latency (median of --onnx-repeats) and batch-32 images per second.

Prints a table and writes benchmark.json (default: logs/benchmark/runs/<time>/benchmark.json, rewritten after each
part). Overrides are train config overrides (data.root=...). Scratch data (the synthetic images, every cache)
lives in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from image_transfer import CONFIG_DIR, PROJECT_ROOT
from image_transfer.cpu_memory import keep_freed_memory
from image_transfer.data.batch import collate
from image_transfer.data.dataset import ImageDataset, SeededEpochSampler
from image_transfer.data.image_store import PIXELS, load_images
from image_transfer.data.transforms import train_transform
from image_transfer.files import write_csv, write_json
from image_transfer.markdown import table
from image_transfer.models.metric_names import VAL_ACC
from image_transfer.models.onnx_model import OnnxClassifier, Predictions, export_onnx
from image_transfer.runs.environment import environment
from image_transfer.runs.run_dirs import claim_new_dir

PARTS = ("loader", "frozen_recipe", "scale", "gpu", "onnx")


# Lists are comma-separated: a list option taking several words would also take the train overrides after it.
def part_names(text: str) -> list[str]:
    names = text.split(",")
    if unknown := [name for name in names if name not in PARTS]:
        raise argparse.ArgumentTypeError(f"unknown part {', '.join(unknown)}: the parts are {','.join(PARTS)}")
    return names


def sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",")]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="benchmark.json (default: in logs/benchmark/runs/<time>/)")
    parser.add_argument(
        "--only", type=part_names, default=list(PARTS), help=f"parts, comma-separated: {','.join(PARTS)}"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="loader: DataLoader workers of both sides (0: as training on a CPU)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="loader: epochs of each side, interleaved")
    parser.add_argument("--frozen-epochs", type=int, default=30)
    parser.add_argument("--scale-images", type=sizes, default=[5_000, 20_000], help="scale: sizes, e.g. 5000,20000")
    parser.add_argument("--gpu-epochs", type=int, default=3)
    parser.add_argument("--onnx-repeats", type=int, default=30)
    parser.add_argument("--epoch-rss", nargs=3, metavar=("ROOT", "CACHE", "CACHE_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="train config overrides, e.g. data.root=/path/to/data")
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    keep_freed_memory()  # as the entry points do: CPU inference and training page-fault less
    if args.epoch_rss:  # the child process of the scale part
        print(json.dumps(epoch_memory(*args.epoch_rss, batch_size=args.batch_size)))
        return
    run_dir = Path(
        claim_new_dir(str(PROJECT_ROOT / "logs" / "benchmark" / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")))
    )
    out = args.out or run_dir / "benchmark.json"
    results = {"command": " ".join(sys.argv), "environment": environment()}
    with tempfile.TemporaryDirectory(prefix="image_transfer_benchmark_") as scratch:
        for part in args.only:
            print(f"--- {part}", flush=True)
            results[part] = PART_FUNCTIONS[part](args, Path(scratch), run_dir)
            write_json(out, results)
    print(report(results))
    print(f"\nwrote {out}")


# ---- loader ------------------------------------------------------------------------------------------------------


class PilImages(Dataset):
    """A baseline: each access opens and decodes the file with PIL (as torchvision's ImageFolder), then applies
    `transform` to the PIL image, or with `on_tensor` to its tensor; samples as ImageDataset's (data/batch.py)."""

    def __init__(self, paths: list[Path], labels: list[int], transform, on_tensor: bool):
        self.paths, self.labels, self.transform, self.on_tensor = paths, labels, transform, on_tensor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as file:
            image = file.convert("RGB")
        image = self.transform(F.pil_to_tensor(image)) if self.on_tensor else F.pil_to_tensor(self.transform(image))
        return {"indices": index, "images": image, "targets": self.labels[index]}


def loader(args, scratch: Path, run_dir: Path) -> dict:
    cfg = train_config(args.overrides)
    datamodule = instantiate(cfg.data, cache_dir=str(scratch / "cache"))
    table_ = datamodule.table
    size = cfg.data.image_size
    start = time.perf_counter()
    images, failed = load_images(table_.paths, table_.names, datamodule.content_hashes(table_), size, scratch / "cache")
    build_s = time.perf_counter() - start
    positions = [p for p in range(len(images)) if p not in failed]
    transform = train_transform(size, "light")
    labels = [table_.labels[p] for p in positions]
    paths = [table_.paths[p] for p in positions]
    sides = {
        "pil": PilImages(paths, labels, transform, on_tensor=False),
        "pil_decode_tensor_augment": PilImages(paths, labels, transform, on_tensor=True),
        "cache": ImageDataset(images, positions, labels, transform),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, dataset in sides.items():
            if name != "cache":
                kwargs = {"shuffle": True, "generator": torch.Generator().manual_seed(repeat)}
            else:
                kwargs = {"sampler": SeededEpochSampler(len(dataset), 0, lambda repeat=repeat: repeat)}
            loader_ = DataLoader(dataset, args.batch_size, num_workers=args.workers, collate_fn=collate, **kwargs)
            rates[name].append(epoch_rate(loader_))
            print(f"  {name}: {rates[name][-1]:.0f} img/s", flush=True)
    pil_rate, cache_rate = statistics.median(rates["pil"]), statistics.median(rates["cache"])
    tensor_rate = statistics.median(rates["pil_decode_tensor_augment"])
    return {
        "images": len(positions),
        "image_size": size,
        "augment": "light",
        "workers": args.workers,
        "batch_size": args.batch_size,
        "cache_build_s": round(build_s, 1),
        "pil_images_per_s": round(pil_rate, 1),
        "cache_images_per_s": round(cache_rate, 1),
        "speedup": round(cache_rate / pil_rate, 2),
        "pil_decode_tensor_augment_images_per_s": round(tensor_rate, 1),
        "speedup_over_pil_decode_tensor_augment": round(cache_rate / tensor_rate, 2),
        "runs_images_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }


def epoch_rate(loader_: DataLoader) -> float:
    start, count = time.perf_counter(), 0
    for batch in loader_:
        count += len(batch.images)
    return count / (time.perf_counter() - start)


# ---- frozen recipe -----------------------------------------------------------------------------------------------


def frozen_recipe(args, scratch: Path, run_dir: Path) -> dict:
    common = [
        "experiment=lite0_frozen",
        f"trainer.max_epochs={args.frozen_epochs}",
        f"data.cache_dir={scratch / 'cache'}",
        *args.overrides,
    ]
    naive = train_run(run_dir / "frozen_naive", [*common, "data.feature_cache=false"])
    cached = train_run(run_dir / "frozen_feature_cache", [*common, "data.feature_cache=true"])
    return {
        "epochs": args.frozen_epochs,
        "recipe": " ".join(common[:2]),
        "naive_s": naive["wall_time_s"],
        "feature_cache_s": cached["wall_time_s"],
        "speedup": round(naive["wall_time_s"] / cached["wall_time_s"], 2),
        "naive_val_acc": naive[VAL_ACC],
        "feature_cache_val_acc": cached[VAL_ACC],
        "val_acc_difference": round(abs(naive[VAL_ACC] - cached[VAL_ACC]), 4),
        "naive_val_loss": naive["val/loss"],
        "feature_cache_val_loss": cached["val/loss"],
        "naive_process_s": naive["process_s"],
        "feature_cache_process_s": cached["process_s"],
        "run_dirs": [str(run_dir / "frozen_naive"), str(run_dir / "frozen_feature_cache")],
    }


def train_run(directory: Path, overrides: list[str]) -> dict:
    """A training run in its own process; its metrics.json, plus the process's wall time."""
    print(f"  train {' '.join(overrides)}", flush=True)
    start = time.perf_counter()
    command = [sys.executable, "-m", "image_transfer.train", *overrides, f"hydra.run.dir={directory}"]
    subprocess.run(command, cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((directory / "metrics.json").read_text())
    return metrics | {"process_s": round(time.perf_counter() - start, 1)}


# ---- scale -------------------------------------------------------------------------------------------------------


def scale(args, scratch: Path, run_dir: Path) -> dict:
    images = scratch / "synthetic" / "images"
    start = time.perf_counter()
    names = write_synthetic_images(images, max(args.scale_images))
    written_s = time.perf_counter() - start
    rows = []
    for count in args.scale_images:
        root = scratch / "synthetic" / str(count)
        root.mkdir()
        (root / "images").symlink_to(images)
        write_csv(
            root / "train.csv", ["image_names", "emergency_or_not"], ((n, i % 2) for i, n in enumerate(names[:count]))
        )
        cache_dir = scratch / f"scale_cache_{count}"
        datamodule = instantiate(train_config([f"data.root={root}"]).data, cache_dir=str(cache_dir))
        start = time.perf_counter()
        store, _ = load_images(
            datamodule.table.paths, datamodule.table.names, datamodule.content_hashes(datamodule.table), 224, cache_dir
        )
        decode_s = time.perf_counter() - start
        row = {
            "images": count,
            "decode_into_cache_s": round(decode_s, 1),
            "cache_mb_on_disk": round((store.folder / PIXELS).stat().st_size / 2**20, 1),
        }
        for name, cache in (("cache", "true"), ("memory", "false")):
            child = subprocess.run(
                [sys.executable, __file__, "--epoch-rss", str(root), cache, str(cache_dir)],
                cwd=PROJECT_ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            row |= {f"{name}_{key}": value for key, value in measured.items()}
            print(f"  {count} images, {name}: {measured}", flush=True)
        rows.append(row)
    return {"synthetic_images_written_s": round(written_s, 1), "sizes": rows}


def write_synthetic_images(folder: Path, count: int) -> list[str]:
    """`count` distinct 224 x 224 JPEGs of smooth random colour fields (about the real images' file size)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8))
        name = f"synthetic_{index:06d}.jpg"
        coarse.resize((224, 224), Image.BICUBIC).save(folder / name, quality=90)
        names.append(name)
    return names


def epoch_memory(root: str, cache: str, cache_dir: str, batch_size: int) -> dict:
    """Run in a fresh process: set up the data (from the cache, or decoded into memory), then one training epoch
    with the light augmentation; the process's peak resident memory."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = train_config([f"data.root={root}", f"data.image_cache={cache}", f"data.batch_size={batch_size}"])
    datamodule = instantiate(cfg.data, cache_dir=cache_dir, num_workers=0)
    start = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    seen = sum(len(batch.indices) for batch in datamodule.train_dataloader())
    return {
        "setup_s": round(setup_s, 1),
        "epoch_s": round(time.perf_counter() - start, 1),
        "epoch_images": seen,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_imports_mb": round(baseline),
    }


# ---- gpu ---------------------------------------------------------------------------------------------------------


def gpu_runs(args, scratch: Path) -> dict[str, list[str]]:
    """The gpu part's training runs: their names and full override lists."""
    common = [
        "trainer=gpu",
        "finetune=full",
        f"trainer.max_epochs={args.gpu_epochs}",
        "test=false",
        "callbacks.train_throughput.synchronize=true",
        f"data.cache_dir={scratch / 'cache'}",
        *args.overrides,
    ]
    variants = {
        "fp32": ["trainer.precision=32-true", "model.channels_last=false"],
        "bf16_channels_last": ["trainer.precision=bf16-mixed", "model.channels_last=true"],
        "bf16_channels_last_compile": [
            "trainer.precision=bf16-mixed",
            "model.channels_last=true",
            "model.compile=true",
        ],
    }
    return {name: [*common, *overrides] for name, overrides in variants.items()}


def gpu(args, scratch: Path, run_dir: Path) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device here (torch.cuda.is_available() is False)"}
    rows = {}
    for name, overrides in gpu_runs(args, scratch).items():
        metrics = train_run(run_dir / f"gpu_{name}", overrides)
        rows[name] = {
            "images_per_s": round(metrics["train/images_per_s"], 1),
            "last_epoch_images_per_s": round(metrics["train/last_epoch_images_per_s"], 1),
            "data_wait_share": round(metrics["train/data_wait_share"], 3),
            "peak_gpu_memory_mb": round(metrics["train/peak_gpu_memory_mb"]),
            "val_acc": metrics.get(VAL_ACC),
        }
        print(f"  {name}: {rows[name]}", flush=True)  # the part's json is written when all three are done
    fp32 = rows["fp32"]["images_per_s"]
    return {
        "device": torch.cuda.get_device_name(),
        "epochs": args.gpu_epochs,
        "note": "img/s over the whole fit (warm-up, autotuning and compilation included) and over the last epoch",
        **rows,
        "bf16_speedup": round(rows["bf16_channels_last"]["images_per_s"] / fp32, 2),
        "bf16_compile_speedup": round(rows["bf16_channels_last_compile"]["images_per_s"] / fp32, 2),
        "last_epoch_bf16_speedup": round(
            rows["bf16_channels_last"]["last_epoch_images_per_s"] / rows["fp32"]["last_epoch_images_per_s"], 2
        ),
    }


# ---- onnx --------------------------------------------------------------------------------------------------------


def onnx(args, scratch: Path, run_dir: Path) -> dict:
    cfg = train_config(args.overrides)
    model = instantiate(cfg.model).eval()
    path = scratch / "model.onnx"
    export_onnx(model, path)
    session, wrapped = OnnxClassifier.load(path), Predictions(model).eval()
    size = cfg.model.image_size
    results = {"model": cfg.model.backbone, "image_size": size, "torch_threads": torch.get_num_threads()}
    for batch in (1, 32):
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        repeats = args.onnx_repeats if batch == 1 else max(3, args.onnx_repeats // 6)
        with torch.inference_mode():
            timings = {
                "torch": median_seconds(lambda images=images: wrapped(images), repeats),
                "onnxruntime": median_seconds(lambda images=images: session.probabilities(images.numpy()), repeats),
            }
        for name, seconds in timings.items():
            key = f"{name}_batch1_latency_ms" if batch == 1 else f"{name}_batch32_images_per_s"
            results[key] = round(seconds * 1000, 1) if batch == 1 else round(batch / seconds, 1)
    results["latency_ratio"] = round(results["torch_batch1_latency_ms"] / results["onnxruntime_batch1_latency_ms"], 2)
    results["throughput_ratio"] = round(
        results["onnxruntime_batch32_images_per_s"] / results["torch_batch32_images_per_s"], 2
    )
    return results


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: first calls allocate and pick kernels
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


# ---- shared ------------------------------------------------------------------------------------------------------


def train_config(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=overrides)


def report(results: dict) -> str:
    lines = []
    if "loader" in results:
        r = results["loader"]
        lines.append(
            table(
                ["loader (light augmentation)", "images", "workers", "PIL img/s", "cache img/s", "speedup"],
                [["", r["images"], r["workers"], r["pil_images_per_s"], r["cache_images_per_s"], r["speedup"]]],
            )
        )
    if "frozen_recipe" in results:
        r = results["frozen_recipe"]
        lines.append(
            table(
                ["frozen recipe", "epochs", "naive s", "feature cache s", "speedup", "naive val/acc", "cached val/acc"],
                [
                    [
                        r["recipe"],
                        r["epochs"],
                        r["naive_s"],
                        r["feature_cache_s"],
                        r["speedup"],
                        r["naive_val_acc"],
                        r["feature_cache_val_acc"],
                    ]
                ],
            )
        )
    if "scale" in results:
        header = ["scale: images", "decode s", "cache MB", "peak RSS MB: cache", "peak RSS MB: memory"]
        rows = [
            [
                r["images"],
                r["decode_into_cache_s"],
                r["cache_mb_on_disk"],
                r["cache_peak_rss_mb"],
                r["memory_peak_rss_mb"],
            ]
            for r in results["scale"]["sizes"]
        ]
        lines.append(table(header, rows))
    if "gpu" in results:
        r = results["gpu"]
        if "skipped" in r:
            lines.append(f"gpu: skipped: {r['skipped']}")
        else:
            header = ["gpu: " + r["device"], "img/s (fit)", "img/s (last epoch)", "data wait share", "peak GPU MB"]
            rows = [
                [k, v["images_per_s"], v["last_epoch_images_per_s"], v["data_wait_share"], v["peak_gpu_memory_mb"]]
                for k, v in r.items()
                if k in ("fp32", "bf16_channels_last", "bf16_channels_last_compile")
            ]
            lines.append(table(header, rows))
    if "onnx" in results:
        r = results["onnx"]
        lines.append(
            table(
                ["onnx: " + r["model"], "batch 1 latency ms", "batch 32 img/s"],
                [
                    ["PyTorch", r["torch_batch1_latency_ms"], r["torch_batch32_images_per_s"]],
                    ["ONNX Runtime", r["onnxruntime_batch1_latency_ms"], r["onnxruntime_batch32_images_per_s"]],
                ],
            )
        )
    return "\n\n".join(lines)


PART_FUNCTIONS = {"loader": loader, "frozen_recipe": frozen_recipe, "scale": scale, "gpu": gpu, "onnx": onnx}

if __name__ == "__main__":
    main()
