"""Class-activation maps (captum's LayerGradCam) on the backbone's last spatial feature map."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn


def last_feature_layer(model: nn.Module, backbone: nn.Module, images: torch.Tensor) -> nn.Module:
    """The backbone's module that runs last with a spatial output (N, C, h, w), h * w > 1: the final feature
    stage before global pooling, found by running the model, so any timm backbone and the baseline CNN work."""
    produced: list[tuple[nn.Module, torch.Size]] = []
    hooks = [
        module.register_forward_hook(lambda m, _, out: produced.append((m, out.shape)))
        for module in backbone.modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [m for m, shape in produced if len(shape) == 4 and shape[2] * shape[3] > 1]
    maps = spatial or [m for m, shape in produced if len(shape) == 4]
    if not maps:
        raise ValueError(f"{type(backbone).__name__} produces no spatial feature map to explain")
    return maps[-1]


def grad_cam(model: nn.Module, backbone: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N, H, W), >= 0, of `classes` for uint8 `images` (N, 3, H, W), upsampled to the images.

    Leaves the model as it found it: eval mode while explaining (BatchNorm and dropout fixed), then each module's
    own mode back; no parameter's requires_grad is touched (the gradient flows from the images instead).
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        # A copy: images kept from a validation batch are inference-mode tensors, which autograd refuses. Gradient
        # from the input: a frozen backbone's feature maps get one too.
        inputs = images.to(torch.float32, copy=True).requires_grad_()
        layer = last_feature_layer(model, backbone, inputs)
        with torch.enable_grad():
            maps = LayerGradCam(model, layer).attribute(inputs, target=classes, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(maps.detach().float(), tuple(images.shape[-2:]), "bilinear")
    finally:
        for module, training in modes.items():
            module.training = training
    return upsampled[:, 0].clamp(min=0)
