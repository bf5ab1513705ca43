"""An HTTP prediction service (LitServe) for a checkpoint or an exported .onnx file: POST /predict an image, or several
as multipart/form-data files, and get each one's class, class probabilities and the decision rule, as predict
computes them; concurrent requests are predicted in batches. GET /health answers once the model is loaded; /docs.

    python -m image_transfer.serve ckpt_path=logs/train/runs/<time>/checkpoints/best.ckpt [port=8000]
    python -m image_transfer.serve ckpt_path=model.onnx host=0.0.0.0      # every interface (in a container)
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal

import hydra
from omegaconf import DictConfig, OmegaConf

from image_transfer import CONFIG_DIR
from image_transfer.cpu_memory import freeze_loaded_objects
from image_transfer.errors import ConfigError, UserError
from image_transfer.models.onnx_model import OnnxClassifier
from image_transfer.runs.checkpoints import class_names_of, load_model
from image_transfer.runs.failures import report_user_errors

log = logging.getLogger(__name__)

# The packages serving needs beyond the project's own (import name: what pip installs).
SERVING_PACKAGES = {"litserve": "litserve", "python_multipart": "python-multipart"}


def serve(cfg: DictConfig) -> None:
    require_serving_packages()
    check_settings(cfg)
    model = load_model(cfg.ckpt_path, cfg)  # a bad path or option: one message before any process starts
    accelerator = accelerator_for(model, cfg.accelerator)
    classes = ", ".join(class_names_of(model))
    log.info("serving %s (%s) at http://%s:%d/predict", cfg.ckpt_path, classes, cfg.host, cfg.port)
    del model  # each worker process loads its own

    import litserve

    from image_transfer.serving.api import ClassifierAPI
    from image_transfer.serving.uploads import accept_uploads

    api = ClassifierAPI(
        OmegaConf.to_container(cfg, resolve=True), max_batch_size=cfg.max_batch_size, batch_timeout=cfg.batch_timeout
    )
    try:
        server = litserve.LitServer(api, accelerator=accelerator, workers_per_device=cfg.workers)
    except ValueError as error:  # LitServe's check of the accelerator
        raise ConfigError(f"accelerator={cfg.accelerator}: {error}.") from error
    accept_uploads(server.app, api.api_path, cfg.max_upload_mb)
    # SIGTERM (docker stop, kill) stops the service as Ctrl+C does: LitServe then ends its worker processes too,
    # which Python's default SIGTERM handling would leave running. Put back once serving ends: a caller's process
    # (a test's, a notebook's) goes on as it was.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run(host=cfg.host, port=cfg.port, generate_client_file=False)
    except ValueError as error:  # LitServe's checks of host and port, before it starts anything
        raise ConfigError(f"host={cfg.host} port={cfg.port}: {error}.") from error
    finally:
        signal.signal(signal.SIGTERM, previous)


def _forked_servers_keep_the_default_sigterm() -> None:
    """The HTTP server processes LitServe forks while serving keep Python's default (LitServe stops them with
    SIGTERM); any other fork keeps what its parent had."""
    if signal.getsignal(signal.SIGTERM) is signal.default_int_handler:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forked_servers_keep_the_default_sigterm)


def require_serving_packages() -> None:
    missing = [name for module, name in SERVING_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"serving needs {' and '.join(missing)}: pip install {' '.join(missing)} (or the project's extra: "
            "pip install 'image-transfer[serve]')."
        )


def check_settings(cfg: DictConfig) -> None:
    for option in ("max_batch_size", "workers"):
        if not isinstance(cfg[option], int) or cfg[option] < 1:
            raise ConfigError(f"{option}={cfg[option]}: use a whole number from 1.")
    for option in ("max_upload_mb", "max_pixels"):
        if not isinstance(cfg[option], (int, float)) or cfg[option] <= 0:
            raise ConfigError(f"{option}={cfg[option]}: use a number above 0.")
    if not isinstance(cfg.batch_timeout, (int, float)) or cfg.batch_timeout < 0:
        raise ConfigError(f"batch_timeout={cfg.batch_timeout}: use seconds from 0.")


def accelerator_for(model, accelerator: str) -> str:
    if not isinstance(model, OnnxClassifier):
        return accelerator
    if accelerator not in ("auto", "cpu"):
        raise ConfigError(
            f"accelerator={accelerator}: .onnx files run on ONNX Runtime's CPU provider; serve the checkpoint it was "
            "exported from for a GPU, or leave accelerator=auto."
        )
    return "cpu"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="serve")
@report_user_errors
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    freeze_loaded_objects()  # imports done: later collections skip them (cpu_memory.py)
    main()
