"""Transfer-learning image classification with PyTorch Lightning and Hydra."""

from pathlib import Path

from omegaconf import OmegaConf

# The repository root (configs/, data/, logs/ live there); configs refer to it as ${project_root:}.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("len", len, replace=True)
# hydra.run.dir: the run dir named by `resume` (continue a run in place), else a fresh one.
OmegaConf.register_new_resolver(
    "run_dir",
    lambda resume, fresh: (
        str(Path(resume) if Path(resume).is_absolute() else PROJECT_ROOT / resume) if resume else fresh
    ),
    replace=True,
)
