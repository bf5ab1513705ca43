"""Feed each kind of bad input to `python -m vehicle_transfer.train` and print the message it gets.

    python scripts/bad_input_matrix.py [--data ../shared/data/emergency_vehicles]

Each case is a small data set (real images plus one defect) in a temp dir, trained with
debug=fast_dev_run; the table shows the exit status and the last error line (or "trained").
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vehicle_transfer import PROJECT_ROOT

FAST = ["debug=fast_dev_run", "model.image_size=64", "data.batch_size=8", "data.val_fraction=0.25"]


def make_set(root: Path, data: Path, extra: dict[str, callable] | None = None, rows: list | None = None) -> Path:
    """16 real images (+ extra files written by callables), and a train.csv listing them (or `rows`)."""
    (root / "images").mkdir(parents=True)
    names = [r["image_names"] for r in csv.DictReader(open(data / "train.csv"))][:16]
    labels = {r["image_names"]: r["emergency_or_not"] for r in csv.DictReader(open(data / "train.csv"))}
    for name in names:
        (root / "images" / name).write_bytes((data / "images" / name).read_bytes())
    for name, write in (extra or {}).items():
        write(root / "images" / name)
    listed = (
        rows if rows is not None else [(n, labels[n]) for n in names] + [(n, i % 2) for i, n in enumerate(extra or {})]
    )
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_names", "emergency_or_not"), *listed])
    return root


def cases(data: Path, tmp: Path):
    source = Image.open(next((data / "images").glob("*.jpg"))).convert("RGB")
    first = [r["image_names"] for r in csv.DictReader(open(data / "train.csv"))][:16]
    image = lambda fn: lambda p: fn(source).save(p)  # noqa: E731
    real = (data / "images" / first[0]).read_bytes()
    yield "csv missing", [f"data.root={tmp / 'nocsv'}"], lambda d: (d / "images").mkdir(parents=True)
    yield "csv empty", [f"data.root={tmp / 'empty'}"], lambda d: (make_set(d, data), (d / "train.csv").write_text(""))
    yield "csv header only", [f"data.root={tmp / 'header'}"], lambda d: make_set(d, data, rows=[])
    yield (
        "csv without the label column",
        [f"data.root={tmp / 'cols'}", "data.label_column=label"],
        lambda d: make_set(d, data),
    )
    yield (
        "label outside the classes",
        [f"data.root={tmp / 'lab'}"],
        lambda d: make_set(d, data, rows=[(n, 1) for n in first[:-1]] + [(first[-1], 7)]),
    )
    yield (
        "label missing",
        [f"data.root={tmp / 'nolab'}"],
        lambda d: make_set(d, data, rows=[(n, 1) for n in first[:-1]] + [(first[-1], "")]),
    )
    yield (
        "repeated row (same label)",
        [f"data.root={tmp / 'rep'}"],
        lambda d: make_set(d, data, rows=[(n, i % 2) for i, n in enumerate(first)] + [(first[0], 0)]),
    )
    yield (
        "repeated row (other label)",
        [f"data.root={tmp / 'repc'}"],
        lambda d: make_set(d, data, rows=[(n, i % 2) for i, n in enumerate(first)] + [(first[0], 1)]),
    )
    yield (
        "image folder missing",
        [f"data.root={tmp / 'nodir'}"],
        lambda d: (d.mkdir(), (d / "train.csv").write_text("image_names,emergency_or_not\n0.jpg,1\n")),
    )
    yield (
        "listed image missing",
        [f"data.root={tmp / 'miss'}"],
        lambda d: make_set(d, data, rows=[(n, i % 2) for i, n in enumerate(first)] + [("absent.jpg", 0)]),
    )
    for kind, write in {
        "zero-byte JPEG": lambda p: p.write_bytes(b""),
        "truncated JPEG": lambda p: p.write_bytes(real[: len(real) // 2]),
        "corrupt JPEG": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)),
    }.items():
        key = kind.split()[0]
        yield kind, [f"data.root={tmp / key}"], lambda d, w=write: make_set(d, data, {"bad.jpg": w})
        yield (
            kind + " (on_bad_image=skip)",
            [f"data.root={tmp / (key + '_skip')}", "data.on_bad_image=skip"],
            lambda d, w=write: make_set(d, data, {"bad.jpg": w}),
        )
    formats = {
        "x.png": image(lambda s: s),
        "x.gif": image(lambda s: s),
        "grey.jpg": image(lambda s: s.convert("L")),
        "palette.png": image(lambda s: s.convert("P")),
        "rgba.png": image(lambda s: s.convert("RGBA")),
        "cmyk.jpg": image(lambda s: s.convert("CMYK")),
        "large.jpg": image(lambda s: s.resize((6000, 6000))),
        "16bit.png": lambda p: Image.fromarray(np.asarray(source.convert("L"), np.uint16) * 257).save(p),
        "with space.jpg": image(lambda s: s),
        "sirène_é.jpg": image(lambda s: s),
    }
    yield (
        "PNG, GIF, grey, palette, RGBA, CMYK, 16-bit, 6000 px, spaces, non-ASCII",
        [f"data.root={tmp / 'formats'}"],
        lambda d: make_set(d, data, formats),
    )
    yield "unknown model", ["model=nope", f"data.root={data}"], None
    yield "unknown finetune strategy", ["finetune=nope", f"data.root={data}"], None
    yield "unknown trainer", ["trainer=nope", f"data.root={data}"], None
    yield "unknown backbone name", ["model.backbone=nope_net", f"data.root={data}"], None
    yield "weights not available offline", ["model=vgg16", f"data.root={data}"], None


def outcome(result: subprocess.CompletedProcess) -> str:
    if result.returncode == 0:
        return "trained"
    lines = [
        l
        for l in result.stderr.splitlines()
        if l.strip() and not l.startswith(("Set the environment", "  warnings", "/"))
    ]
    error = next(
        (l for l in reversed(lines) if "Error" in l or "Exception" in l or "Could not" in l), lines[-1] if lines else ""
    )
    detail = (
        lines[lines.index(error) + 1]
        if error in lines and lines.index(error) + 1 < len(lines) and len(error) < 80
        else ""
    )
    return (error + " " + detail).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("| input | exit | message |\n| --- | --- | --- |")
        for name, overrides, build in cases(args.data.resolve(), tmp):
            if build:
                root = Path(next(o for o in overrides if o.startswith("data.root=")).split("=", 1)[1])
                build(root)
            command = [
                sys.executable,
                "-m",
                "vehicle_transfer.train",
                *FAST,
                *overrides,
                f"paths.log_dir={tmp / 'logs'}",
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            print(f"| {name} | {result.returncode} | {outcome(result).replace('|', '/')[:400]} |", flush=True)


if __name__ == "__main__":
    main()
