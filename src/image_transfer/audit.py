"""Audit the data the DataModule would read: audit.json, audit.md (and train_clean.csv) in the run dir.

    python -m image_transfer.audit [test_csv=null] [near_duplicates=false] [clean_csv=true]

The checks live in `data.audit`, the markdown in `data.audit_report`. The user's data is only read:
everything is written, atomically, into the run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import freeze_loaded_objects
from image_transfer.data.audit import audit, audit_rows, clean_rows, table_rows
from image_transfer.data.audit_report import markdown
from image_transfer.data.sources import csv_class_names, csv_columns, csv_location, folder_data
from image_transfer.data.table import DataError
from image_transfer.files import write_atomically, write_csv, write_json
from image_transfer.paths import from_project_root
from image_transfer.runs.failures import report_user_errors

log = logging.getLogger(__name__)


def run_audit(cfg: DictConfig) -> dict:
    """Audit the configured data and write the report files; returns the report."""
    root, data = from_project_root(cfg.data.root), cfg.data
    if data.get("layout", "csv") == "folder":
        report = _audit_folders(root, data.class_names, cfg)
    else:
        csv_path, image_dir = csv_location(root, data.csv_file, data.image_dir)
        # A multi-label csv's form, if it is one: a delimiter, or 0/1 columns (a plain list, not OmegaConf's).
        multi = data.get("label_delimiter"), list(data.label_columns) if data.get("label_columns") else None
        name_column, label_column = csv_columns(csv_path, data.name_column, data.label_column, multi[1])
        report = audit(
            csv_path,
            image_dir,
            name_column,
            label_column,
            csv_class_names(csv_path, label_column, data.class_names, *multi),
            csv_path.parent / cfg.test_csv if cfg.test_csv else None,
            cfg.near_duplicates,
            cfg.max_distance,
            *multi,
        )
    output = Path(cfg.paths.output_dir)
    if cfg.clean_csv:
        if data.get("layout", "csv") == "folder":
            raise DataError("clean_csv=true writes a cleaned csv: class folders have none; drop clean_csv.")
        header, rows, dropped = clean_rows(csv_path, report, name_column, label_column, *multi)
        write_csv(output / "train_clean.csv", header, rows)
        report["clean"] = {"csv": str(output / "train_clean.csv"), "rows_kept": len(rows), "dropped": dropped}
        log.info(
            "train_clean.csv: %d of %d rows kept; dropped %s",
            len(rows),
            report["rows"],
            ", ".join(f"{len(v)} {k}" for k, v in dropped.items() if v) or "none",
        )
    write_json(output / "audit.json", report)
    write_atomically(output / "audit.md", markdown(report))
    log.info("audit written to %s: %s", output, ", ".join(f"{k} {v}" for k, v in report["summary"].items()))
    return report


def _audit_folders(root: Path, class_names, cfg: DictConfig) -> dict:
    """Class folders: every image of every split folder (train/ val/ and test/, whose copies of training images
    are reported as the test csv's are)."""
    data = folder_data(root, class_names)
    names = list(data.class_names)
    test = None
    if data.test is not None:
        test = ("test/", table_rows(data.test, names), None)
    return audit_rows(
        str(root), table_rows(data.table, names), root, names, test, cfg.near_duplicates, cfg.max_distance
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
@report_user_errors
def main(cfg: DictConfig) -> None:
    run_audit(cfg)


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
