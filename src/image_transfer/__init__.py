"""Transfer-learning image classification with PyTorch Lightning and Hydra."""

from omegaconf import OmegaConf

from image_transfer import paths
from image_transfer.models import metric_names
from image_transfer.paths import CONFIG_DIR, PROJECT_ROOT
from image_transfer.runs import run_dirs

__all__ = ["CONFIG_DIR", "PROJECT_ROOT"]

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("len", len, replace=True)
OmegaConf.register_new_resolver("metric_mode", metric_names.mode, replace=True)
# Every resolver is pure: a run's dir is named here and claimed (created) when the run starts (runs/run_dirs.py).
OmegaConf.register_new_resolver("run_dir", run_dirs.run_dir, replace=True)
OmegaConf.register_new_resolver("record_dir", run_dirs.record_dir, replace=True)
OmegaConf.register_new_resolver("first_existing", paths.first_existing, replace=True)
