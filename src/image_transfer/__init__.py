"""Transfer-learning image classification with PyTorch Lightning and Hydra."""

from pathlib import Path

from omegaconf import OmegaConf

# The repository root (configs/, data/, logs/ live there); configs refer to it as ${project_root:}.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"

from image_transfer import paths  # noqa: E402  (needs PROJECT_ROOT)
from image_transfer.runs import run_dirs  # noqa: E402

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("len", len, replace=True)
OmegaConf.register_new_resolver("run_dir", run_dirs.run_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver("new_dir", run_dirs.claim_new_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver("record_dir", run_dirs.record_dir, replace=True)
OmegaConf.register_new_resolver("first_existing", paths.first_existing, replace=True)
