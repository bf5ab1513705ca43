"""Run a named set of experiments (configs/reproductions.yaml) and tabulate what they measured.

    python scripts/reproduce.py --set seeds|offline|best|ablation [--seed 42] [OVERRIDE ...]

Each row runs as a Hydra multirun job of `image_transfer.train` (so a failing row is recorded in
its error.txt and the set goes on); rows whose pretrained weights are not available offline are
reported as skipped, with the reason. Writes logs/reproductions/<time>_<set>/results.csv and
results.md, and for sets with `submission: true` the fold ensemble's submission.csv for test.csv.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from image_transfer import CONFIG_DIR, PROJECT_ROOT
from image_transfer.callbacks.finetune_config import finetune
from image_transfer.files import write_atomically, write_csv
from image_transfer.markdown import table
from image_transfer.models.metric_names import VAL_ACC
from image_transfer.runs.environment import git_commit

SETS_FILE = CONFIG_DIR / "reproductions.yaml"
COLUMNS = [
    "experiment",
    "overrides",
    "model",
    "finetune",
    "epochs",
    "image_size",
    "folds",
    "train_acc",
    "val_acc",
    "val_acc_std",
    "wall_time_s",
    "train_images_per_s",
    "device",
    "status",
    "run_dir",
    "commit",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", required=True, dest="name", help="a set named in --sets")
    parser.add_argument("--sets", type=Path, default=SETS_FILE, help=f"the sets file (default {SETS_FILE})")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="the reproduction dir (default logs/reproductions/<time>_<set>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row, e.g. data.root=...")
    args = parser.parse_args()
    sets = OmegaConf.to_container(OmegaConf.load(args.sets))
    if args.name not in sets:
        parser.error(f"--set {args.name}: {args.sets} defines {', '.join(sets)}")
    spec = sets[args.name]
    out = args.out or PROJECT_ROOT / "logs" / "reproductions" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{args.name}"
    out.mkdir(parents=True, exist_ok=True)

    data_overrides = [o for o in args.overrides if o.startswith("data.")]  # what eval and predict also need
    commit = commit_label(git_commit())  # the code every row runs
    start, rows, cross_validated = time.perf_counter(), [], []
    for index, row in enumerate(spec["rows"]):
        overrides = [f"experiment={row['experiment']}", f"seed={args.seed}", *row.get("overrides", []), *args.overrides]
        run_dir = out / "runs" / str(index)
        print(f"[{index + 1}/{len(spec['rows'])}] train {' '.join(overrides)}", flush=True)
        run_python("image_transfer.train", "-m", *overrides, f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=.")
        rows.append(result_row(row, run_dir, commit))
        if rows[-1]["status"] == "ok":
            if rows[-1]["folds"]:
                cross_validated.append(rows[-1])
            if row.get("tta_ablation"):
                rows.append(without_flip_tta(rows[-1], run_dir, data_overrides))
        write_tables(out, spec, rows, commit, time.perf_counter() - start, final=False)  # what is done so far
    if spec.get("submission") and cross_validated:
        best = max(cross_validated, key=lambda r: r["val_acc"])
        write_submission(out, Path(best["run_dir"]), data_overrides)
    write_tables(out, spec, rows, commit, time.perf_counter() - start, final=True)
    print(f"results: {out / 'results.md'}")
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


def run_python(module: str, *arguments: str) -> None:
    """Outcomes are read from the files the job writes (metrics.json, summary.json), not its exit status."""
    subprocess.run([sys.executable, "-m", module, *arguments], cwd=PROJECT_ROOT)


def commit_label(git: dict) -> str:
    """The project's commit, with -dirty when the work tree differs from it (as git describe --dirty); empty
    outside a git checkout."""
    return f"{git['commit']}{'-dirty' if git['dirty'] else ''}" if git["commit"] else ""


def result_row(row: dict, run_dir: Path, commit: str) -> dict:
    """A table row from the job's config, metrics.json, or error.txt (weights missing offline: skipped)."""
    values = {
        "experiment": row["experiment"],
        "overrides": " ".join(row.get("overrides", [])),
        "run_dir": str(run_dir),
        "commit": commit,
    }
    config_file = run_dir / ".hydra" / "config.yaml"
    if config_file.is_file():
        config = OmegaConf.load(config_file)
        values |= {
            "model": config.model.backbone,
            "finetune": finetune(config).strategy,
            "epochs": config.trainer.max_epochs,
            "image_size": config.model.image_size,
            "folds": (config.data.get("folds") or "") if config.data.get("fold") is None else "",
        }  # one fold: no CV
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        values |= {
            "train_acc": metrics.get("train/acc"),
            "val_acc": metrics.get(VAL_ACC),
            "val_acc_std": metrics.get(f"{VAL_ACC}_std", ""),  # a cross-validation's spread over its folds
            "wall_time_s": metrics.get("wall_time_s"),
            "train_images_per_s": metrics.get("train/images_per_s"),
            "device": metrics.get("device"),
            "status": "ok",
        }
    else:
        error = job_error(run_dir)
        missing_weights = re.search(r"WeightsUnavailableError\(?\W*(.*?)[\"')]*( full_key: \S+)?$", error)
        values["status"] = f"skipped: {missing_weights.group(1)}" if missing_weights else f"failed: {error}"
    return {column: values.get(column, "") for column in COLUMNS}


def job_error(run_dir: Path) -> str:
    """The failed job's error on one line, as the sweep's summary (image_transfer.sweeps.summary) has it."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return "no metrics.json and no summary.json (the job did not start)"
    errors = [job.get("error") for job in json.loads(summary.read_text())["jobs"] if job.get("error")]
    return errors[0] if errors else "no metrics.json"


def without_flip_tta(row: dict, run_dir: Path, data_overrides: list[str]) -> dict:
    """The same checkpoints (every fold's, or the single run's) scored on their validation images
    without flip TTA: what TTA adds. A cross-validation's folds are one sweep, in one process."""
    folds = len(list(run_dir.glob("fold_*")))  # fold_0 ... fold_<K-1>
    eval_dir = run_dir / "eval_no_tta"
    if folds:  # eval_no_tta/fold_<k>
        each = [
            f"+fold={','.join(map(str, range(folds)))}",
            f"ckpt_path={run_dir}/fold_${{fold}}/checkpoints/best.ckpt",
        ]
        where = ["-m", f"hydra.sweep.dir={eval_dir}", "hydra.sweep.subdir=fold_${fold}"]
    else:
        each, where = [f"ckpt_path={run_dir}/checkpoints/best.ckpt"], [f"hydra.run.dir={eval_dir}"]
    run_python("image_transfer.eval", *where, *each, "tta_flip=false", *data_overrides)
    eval_dirs = [eval_dir / f"fold_{fold}" for fold in range(folds)] or [eval_dir]
    accuracies = [json.loads((directory / "metrics.json").read_text())["test/acc"] for directory in eval_dirs]
    cross_validated = len(accuracies) > 1
    return row | {
        "overrides": (row["overrides"] + " tta_flip=false (no flip TTA)").strip(),
        "train_acc": "",
        "val_acc": statistics.fmean(accuracies),
        "val_acc_std": statistics.stdev(accuracies) if cross_validated else "",
        "wall_time_s": "",
        "train_images_per_s": "",
        "run_dir": f"{run_dir}/eval_no_tta/fold_*" if cross_validated else f"{run_dir}/eval_no_tta",
    }


def write_submission(out: Path, run_dir: Path, data_overrides: list[str]) -> None:
    """Mean probabilities of every fold's checkpoint, with flip TTA, for test.csv, in the hackathon's submission
    format: the data's name and label columns, the label as the class index."""
    run_python(
        "image_transfer.predict",
        f"ckpt_path={run_dir}/fold_*/checkpoints/best.ckpt",
        "tta_flip=true",
        "probabilities=false",
        "label_format=index",
        f"output={out / 'submission.csv'}",
        f"hydra.run.dir={out / 'predict'}",
        *data_overrides,
    )


def write_tables(out: Path, spec: dict, rows: list[dict], commit: str, seconds: float, final: bool) -> None:
    """results.csv/.md once the set is done; until then results.partial.csv/.md, so that an interrupted
    set never leaves a table that looks complete."""
    stem = "results" if final else "results.partial"
    footer = (
        f"The whole set took {_duration(seconds)}."
        if final
        else f"Partial: {len(rows)} row(s) after {_duration(seconds)}; the set was still running."
    )
    write_csv(out / f"{stem}.csv", COLUMNS, [[row[column] for column in COLUMNS] for row in rows])
    write_atomically(out / f"{stem}.md", markdown(spec, rows, commit) + f"\n{footer}\n")
    if final:
        for partial in out.glob("results.partial.*"):
            partial.unlink()


def markdown(spec: dict, rows: list[dict], commit: str) -> str:
    published = {r["experiment"]: r["published"] for r in spec["rows"] if r.get("published")}
    header = ["experiment", "model", "finetune", "epochs", "image size"]
    header += ["published train acc", "published val acc"] if published else []
    header += ["train acc", "val acc", "wall time", "train img/s", "device", "status", "run dir"]
    dirty = " (-dirty: the work tree had uncommitted changes)" if commit.endswith("-dirty") else ""
    code = f"Code: commit `{commit}`{dirty}." if commit else "Code: not a git checkout (commit unknown)."
    lines = [f"# {spec['title']}", "", code, ""]
    if spec.get("published_source"):
        lines += [f"Published figures: {spec['published_source']}.", ""]
    body = []
    for r in rows:
        name = r["experiment"] + (f" ({r['overrides']})" if r["overrides"] else "")
        val = _fraction(r["val_acc"]) + (
            f" ± {r['val_acc_std']:.4f} ({r['folds']}-fold)" if r["val_acc_std"] != "" else ""
        )
        cells = [name, r["model"], r["finetune"], r["epochs"], r["image_size"]]
        if published:
            figures = published.get(r["experiment"], {})
            cells += [_fraction(figures.get("train_acc", "")), _fraction(figures.get("val_acc", ""))]
        wall = _duration(r["wall_time_s"])
        speed = f"{r['train_images_per_s']:.1f}" if r["train_images_per_s"] not in ("", None) else ""
        status = r["status"].split(". ")[0]  # the reason's first sentence; results.csv has all of it
        cells += [_fraction(r["train_acc"]), val, wall, speed, r["device"], status, f"`{r['run_dir']}`"]
        body.append(cells)
    return "\n".join([*lines, table(header, body)]) + "\n"


def _duration(seconds) -> str:
    if seconds in ("", None):
        return ""
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _fraction(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value or "")


if __name__ == "__main__":
    sys.exit(main())
