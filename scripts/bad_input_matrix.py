"""Feed each kind of bad input to the entry points and print what a user sees: exit status and message.

    python scripts/bad_input_matrix.py [--data ../shared/data/emergency_vehicles] [--only TEXT]

Each case builds a small data set (real images plus one defect) or a bad option, file or checkpoint in a
temp dir and runs `train` (debug=fast_dev_run), `eval`, `predict`, `export`, `audit` or `scripts/prepare_data.py`
on it. The table shows the exit status, whether a traceback was printed, and the message (the "Error:"
line, or "trained" / "ok"). Expected: status 1 and one message naming the file, row or option and the
fix; status 0 where the input is handled (converted, skipped with a count, or already complete).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from image_transfer import PROJECT_ROOT, markdown

FAST = ["debug=fast_dev_run", "model.image_size=64", "data.batch_size=8", "data.val_fraction=0.25"]
# A real (short) fit, for the cases that need a checkpoint or a finished run.
SHORT = ["model=cnn", "model.image_size=64", "data.batch_size=8", "data.val_fraction=0.25", "trainer.max_epochs=1"]


@dataclass
class Case:
    name: str
    args: list[str]
    build: Callable[[Path], object] | None = None  # writes the case's input under its own dir
    entry: str = "image_transfer.train"  # a module (-m) or a script path
    fast: bool = True  # train cases: add FAST
    needs: list[str] = field(default_factory=list)  # shared inputs (a trained run) made once


class Inputs:
    """Real images from the data set, written as small data sets with one defect each."""

    def __init__(self, data: Path):
        with open(data / "train.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        self.data = data
        self.names = [r["image_names"] for r in rows[:16]]
        self.labels = {r["image_names"]: r["emergency_or_not"] for r in rows}
        with Image.open(data / "images" / self.names[0]) as image:
            self.photo = image.convert("RGB")

    def dataset(
        self,
        root: Path,
        extra: dict[str, Callable] | None = None,
        rows: list | None = None,
        text: str | None = None,
        encoding: str = "utf-8",
    ) -> Path:
        """16 real images (+ extra files), and a train.csv listing them (or `rows`, or the raw `text`)."""
        (root / "images").mkdir(parents=True)
        for name in self.names:
            (root / "images" / name).write_bytes((self.data / "images" / name).read_bytes())
        for name, write in (extra or {}).items():
            write(root / "images" / name)
        if rows is None:
            rows = [(n, self.labels[n]) for n in self.names] + [(n, i % 2) for i, n in enumerate(extra or {})]
        if text is None:
            text = "".join(f"{a},{b}\n" for a, b in [("image_names", "emergency_or_not"), *rows])
        (root / "train.csv").write_text(text, encoding=encoding, newline="")
        return root

    def rows(self, labels: list) -> list:
        return list(zip(self.names, labels))

    def save(self, convert: Callable[[Image.Image], Image.Image], **options) -> Callable[[Path], None]:
        return lambda path: convert(self.photo).save(path, **options)

    def rotated_jpeg(self, path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways, shown upright: how phone cameras write photos
        self.photo.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def cases(inputs: Inputs, tmp: Path) -> Iterator[Case]:
    real = (inputs.data / "images" / inputs.names[1]).read_bytes()
    half = ["0", "1"] * 8
    data = f"data.root={inputs.data}"

    def on(name: str) -> str:
        return f"data.root={tmp / name}"

    # ---- the csv ---------------------------------------------------------------------------------------------
    yield Case("csv missing", [on("nocsv")], lambda d: (d / "images").mkdir(parents=True))
    yield Case("csv empty", [on("empty")], lambda d: inputs.dataset(d, text=""))
    yield Case("csv header only", [on("header")], lambda d: inputs.dataset(d, rows=[]))
    yield Case("csv without the label column", [on("cols"), "data.label_column=label"], inputs.dataset)
    yield Case(
        "csv in UTF-16 (a spreadsheet's 'Unicode text')", [on("utf16")], lambda d: inputs.dataset(d, encoding="utf-16")
    )
    yield Case(
        "csv with ';' separators, CRLF line ends, a BOM, spaces in the header",
        [on("dialect")],
        lambda d: inputs.dataset(
            d,
            text="\ufeffimage_names ; emergency_or_not\r\n"
            + "".join(f"{n};{inputs.labels[n]}\r\n" for n in inputs.names),
        ),
    )
    yield Case(
        "labels written as 0.0 / 1.0 (pandas)",
        [on("floats")],
        lambda d: inputs.dataset(d, rows=inputs.rows([f"{x}.0" for x in half])),
    )
    yield Case("label outside the classes", [on("lab")], lambda d: inputs.dataset(d, rows=inputs.rows(half[:-1] + [7])))
    yield Case("label missing", [on("nolab")], lambda d: inputs.dataset(d, rows=inputs.rows(half[:-1] + [""])))
    yield Case(
        "repeated row (same label)",
        [on("rep")],
        lambda d: inputs.dataset(d, rows=inputs.rows(half) + [(inputs.names[0], 0)]),
    )
    yield Case(
        "repeated row (other label)",
        [on("repc")],
        lambda d: inputs.dataset(d, rows=inputs.rows(half) + [(inputs.names[0], 1)]),
    )
    # ---- the images ------------------------------------------------------------------------------------------
    yield Case(
        "image folder missing",
        [on("nodir")],
        lambda d: (d.mkdir(), (d / "train.csv").write_text("image_names,emergency_or_not\n0.jpg,1\n")),
    )
    yield Case(
        "listed image missing", [on("miss")], lambda d: inputs.dataset(d, rows=inputs.rows(half) + [("absent.jpg", 0)])
    )
    broken = {
        "zero-byte JPEG": lambda p: p.write_bytes(b""),
        "truncated JPEG": lambda p: p.write_bytes(real[: len(real) // 2]),
        "corrupt JPEG": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)),
    }
    for kind, write in broken.items():
        key = kind.split()[0]
        yield Case(kind, [on(key)], lambda d, w=write: inputs.dataset(d, {"bad.jpg": w}))
        yield Case(
            kind + " (data.on_bad_image=skip)",
            [on(key + "_skip"), "data.on_bad_image=skip"],
            lambda d, w=write: inputs.dataset(d, {"bad.jpg": w}),
        )
    formats = {
        "x.png": inputs.save(lambda s: s),
        "x.gif": inputs.save(lambda s: s),
        "grey.jpg": inputs.save(lambda s: s.convert("L")),
        "palette.png": inputs.save(lambda s: s.convert("P")),
        "rgba.png": inputs.save(lambda s: s.convert("RGBA")),
        "cmyk.jpg": inputs.save(lambda s: s.convert("CMYK")),
        "large.jpg": inputs.save(lambda s: s.resize((6000, 6000))),
        "16bit.png": lambda p: Image.fromarray(np.asarray(inputs.photo.convert("L"), np.uint16) * 257).save(p),
        "with space.jpg": inputs.save(lambda s: s),
        "sirène_é.jpg": inputs.save(lambda s: s),
        "rotated.jpg": inputs.rotated_jpeg,
    }
    yield Case(
        "PNG, GIF, grey, palette, RGBA, CMYK, 16-bit, 6000 px, spaces, non-ASCII, EXIF-rotated",
        [on("formats")],
        lambda d: inputs.dataset(d, formats),
    )
    # ---- data that cannot give a meaningful result -----------------------------------------------------------
    yield Case("one class only", [on("one")], lambda d: inputs.dataset(d, rows=inputs.rows(["0"] * 16)))
    yield Case(
        "a class with a single image", [on("single")], lambda d: inputs.dataset(d, rows=inputs.rows(["0"] * 15 + ["1"]))
    )
    yield Case("data.class_names with a third class", [data, "data.class_names=[a,b,c]"])
    yield Case(
        "data.folds=5, a class with 3 images",
        [on("folds"), "data.folds=5"],
        lambda d: inputs.dataset(d, rows=inputs.rows(["0"] * 13 + ["1"] * 3)),
    )
    yield Case("data.subset=3", [data, "data.subset=3"])
    yield Case("data.subset=5 (too few to validate every class)", [data, "data.subset=5"])
    yield Case("data.val_fraction=1", [data, "data.val_fraction=1"])
    yield Case(
        "data.val_fraction=0 (every image trains, no validation)", [data, "data.subset=32", "data.val_fraction=0"]
    )
    yield Case("data.fold=1 without data.folds", [data, "data.fold=1"])
    # ---- options ---------------------------------------------------------------------------------------------
    yield Case("trainer.max_epochs=0", [data, "trainer.max_epochs=0"], fast=False)
    yield Case("data.batch_size=0", [data, "data.batch_size=0"])
    yield Case("model.optimizer.lr=abc", [data, "data.subset=32", "model.optimizer.lr=abc"])
    yield Case("a misspelt option (trainer.max_epoch=3)", [data, "trainer.max_epoch=3"])
    yield Case("unknown model", [data, "model=nope"])
    yield Case("unknown finetune strategy", [data, "finetune=nope"])
    yield Case("unknown backbone name", [data, "model.backbone=nope_net"])
    yield Case("weights not available offline", [data, "model=vgg16"])
    yield Case("trainer.accelerator=gpu on a machine without one", [data, "trainer.accelerator=gpu"])
    # ---- checkpoints and resuming ----------------------------------------------------------------------------
    run = tmp / "trained"
    ckpt = f"{run}/checkpoints/best.ckpt"
    yield Case(
        "resume= of a finished run", [data, "data.subset=32", *SHORT, f"resume={run}"], fast=False, needs=["trained"]
    )
    killed = tmp / "killed"  # the trained run as a kill after its last checkpoint leaves it: no metrics.json
    yield Case(
        "resume= of a killed run with a different configuration",
        [data, "data.subset=32", *SHORT, "seed=7", f"resume={killed}"],
        lambda d: (shutil.copytree(run, killed), (killed / "metrics.json").unlink()),
        fast=False,
        needs=["trained"],
    )
    yield Case(
        "resume= of a dir where no epoch finished",
        [data, f"resume={tmp / 'unfinished'}"],
        lambda d: (tmp / "unfinished").mkdir(),
    )
    yield Case("hydra.run.dir= an existing run (without resume=)", [data, f"hydra.run.dir={run}"], needs=["trained"])
    yield Case(
        "ckpt_path= a text file",
        [data, f"ckpt_path={tmp / 'notes.txt'}"],
        lambda d: (tmp / "notes.txt").write_text("not a checkpoint\n"),
    )
    yield Case("eval: ckpt_path missing", [data, f"ckpt_path={tmp / 'absent.ckpt'}"], entry="image_transfer.eval")
    yield Case("eval: ckpt_path a run dir", [data, f"ckpt_path={run}"], entry="image_transfer.eval", needs=["trained"])
    yield Case(
        "eval: ckpt_path a truncated checkpoint",
        [data, f"ckpt_path={tmp / 'cut.ckpt'}"],
        lambda d: (tmp / "cut.ckpt").write_bytes(Path(ckpt).read_bytes()[:5000]),
        entry="image_transfer.eval",
        needs=["trained"],
    )
    yield Case(
        "eval: data.class_names with another number of classes",
        [data, f"ckpt_path={ckpt}", "data.class_names=[a,b,c]"],
        entry="image_transfer.eval",
        needs=["trained"],
    )
    yield Case(
        "predict: source= a folder without images",
        [data, f"ckpt_path={ckpt}", f"source={tmp}/emptydir"],
        lambda d: (tmp / "emptydir").mkdir(),
        entry="image_transfer.predict",
        needs=["trained"],
    )
    yield Case(
        "predict: source= a csv that does not exist",
        [data, f"ckpt_path={ckpt}", "source=nope.csv"],
        entry="image_transfer.predict",
        needs=["trained"],
    )
    yield Case(
        "predict: ckpt_path= a file named .onnx that is not one",
        [data, f"ckpt_path={tmp / 'notes.onnx'}"],
        lambda d: (tmp / "notes.onnx").write_text("not a model\n"),
        entry="image_transfer.predict",
    )
    yield Case("export: ckpt_path missing", [f"ckpt_path={tmp / 'absent.ckpt'}"], entry="image_transfer.export")
    yield Case(
        "predict: data.class_names in another order than the model's",
        [data, f"ckpt_path={ckpt}", "data.class_names=[emergency,non_emergency]"],
        entry="image_transfer.predict",
        needs=["trained"],
    )
    # ---- the other commands ----------------------------------------------------------------------------------
    yield Case("audit: data.root missing", [f"data.root={tmp / 'absent'}"], entry="image_transfer.audit")
    prepare = "scripts/prepare_data.py"
    yield Case(
        "prepare_data: a zip without a csv",
        [str(tmp / "bad.zip"), "--target", str(tmp / "prepared")],
        lambda d: _zip_without_csv(tmp / "bad.zip", inputs),
        entry=prepare,
    )
    yield Case(
        "prepare_data: not a zip",
        [str(tmp / "notes.txt"), "--target", str(tmp / "prepared")],
        lambda d: (tmp / "notes.txt").write_text("x"),
        entry=prepare,
    )
    yield Case(
        "prepare_data: a path that does not exist",
        [str(tmp / "nowhere"), "--target", str(tmp / "prepared")],
        entry=prepare,
    )


def _zip_without_csv(path: Path, inputs: Inputs) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(inputs.data / "images" / inputs.names[0], f"ev/images/{inputs.names[0]}")


def command(case: Case, logs: Path) -> list[str]:
    if case.entry.endswith(".py"):
        return [sys.executable, str(PROJECT_ROOT / case.entry), *case.args]
    options = (FAST if case.fast else []) if case.entry == "image_transfer.train" else []
    log_dir = [] if any(a.startswith("hydra.run.dir=") for a in case.args) else [f"paths.log_dir={logs}"]
    return [sys.executable, "-m", case.entry, *options, *case.args, *log_dir]


def outcome(result: subprocess.CompletedProcess) -> str:
    if result.returncode == 0:
        complete = [line for line in result.stdout.splitlines() if "is complete" in line]
        return complete[-1].split(" - ", 1)[-1] if complete else "ok (trained)"
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith(("Error:", "invalid data set:"))), None)
    if start is None:  # Hydra's own message (composition, overrides): everything before its hints
        start = next((i for i, line in enumerate(lines) if not line.startswith(("[", "Seed set"))), 0)
    ends = ("(The full traceback", "Set the environment", "Config search path")
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith(ends)), len(lines))
    return " ".join(lines[start:end]).removeprefix("Error: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "emergency_vehicles")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = Inputs(args.data.resolve())
        trained = False
        rows = []
        for index, case in enumerate(cases(inputs, tmp)):
            if args.only and args.only not in case.name:
                continue
            if "trained" in case.needs and not trained:
                fit = [
                    sys.executable,
                    "-m",
                    "image_transfer.train",
                    f"data.root={inputs.data}",
                    "data.subset=32",
                    *SHORT,
                    f"hydra.run.dir={tmp / 'trained'}",
                ]
                subprocess.run(fit, capture_output=True, check=True, timeout=600)
                trained = True
            if case.build:
                root = next((a.split("=", 1)[1] for a in case.args if a.startswith(f"data.root={tmp}")), None)
                case.build(Path(root) if root else tmp / f"case_{index}")
            result = subprocess.run(command(case, tmp / "logs"), capture_output=True, text=True, timeout=600)
            traceback = "yes" if "Traceback" in result.stderr else "no"
            rows.append([case.name, result.returncode, traceback, outcome(result)[:400]])
            print(f"{case.name}: {result.returncode}", file=sys.stderr, flush=True)
        print(markdown.table(["input", "exit", "traceback", "what the user sees"], rows, align="lrll"))


if __name__ == "__main__":
    main()
