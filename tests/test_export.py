"""ONNX export: ONNX Runtime reproduces PyTorch (labels, probabilities within 1e-4) on images of the data set, for
any batch size, with normalisation and flip TTA inside the graph; predict from the .onnx file writes the same csv
as from the checkpoint."""

import json
import random

import numpy as np
import onnx
import pytest
import torch

from image_transfer.errors import UserError
from image_transfer.export import export
from image_transfer.models.onnx_model import OnnxClassifier, Predictions
from image_transfer.predict import predict
from image_transfer.runs.checkpoints import datamodule_for, load_classifier
from image_transfer.train import train
from tests.helpers.configs import QUICK, SHARED_DATA, TINY, compose_config
from tests.helpers.files import read_csv, write_csv


@pytest.fixture(scope="module", params=["made_up_cnn", pytest.param("real_lite0", marks=pytest.mark.slow)])
def trained(request, tmp_path_factory):
    """A trained checkpoint with flip TTA: the baseline CNN on made-up images (fast), EfficientNet-Lite0 with its
    TF 'same' padding on the real ones (slow). At TINY's 96 px, as at 224, every stride-2 convolution gets an even
    size and so the uneven padding the export must reproduce."""
    run_dir = tmp_path_factory.mktemp("trained")
    if request.param == "real_lite0":
        data = []
        overrides = [*TINY, "finetune=frozen", "trainer.max_epochs=1", "model.tta_flip=true"]
    else:
        data = [f"data.root={request.getfixturevalue('made_up_data').root}"]
        overrides = [*QUICK, "model.tta_flip=true", *data]
    train(compose_config("train", run_dir, overrides))
    return run_dir / "checkpoints" / "best.ckpt", data


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    ckpt, data = trained
    output = tmp_path_factory.mktemp("export") / "model.onnx"
    cfg = compose_config("export", output.parent, [f"ckpt_path={ckpt}", f"output={output}"])
    return export(cfg), ckpt, data


def test_onnx_runtime_reproduces_pytorch_on_the_data_set_images(exported, trained):
    path, ckpt, data = exported
    cfg = compose_config("predict", path.parent / "check", [f"ckpt_path={ckpt}", "source=train.csv", *data])
    model = load_classifier(str(ckpt), cfg)
    session = OnnxClassifier.load(path)
    dm = datamodule_for(cfg, model)
    dm.setup("predict")
    images = first_images(dm.predict_dataloader(), 37)
    with torch.no_grad():
        expected, labels = (t.numpy() for t in Predictions(model)(images))
    for count in (1, 5, 37):  # a dynamic batch axis
        got, got_labels = session.run(images[:count].numpy())
        assert got.shape == (count, 2)
        assert (got_labels == labels[:count]).all()
        assert np.abs(got - expected[:count]).max() < 1e-4
        assert (got.argmax(1) == expected[:count].argmax(1)).all()


def first_images(loader, count: int) -> torch.Tensor:
    """The first `count` images the loader yields, without decoding the rest of its source."""
    batches, seen = [], 0
    for batch in loader:
        batches.append(batch.images)
        seen += len(batch.images)
        if seen >= count:
            break
    return torch.cat(batches)[:count]


def test_the_file_carries_its_input_and_classes(exported):
    path, ckpt, _ = exported
    proto = onnx.load(str(path))
    metadata = {p.key: p.value for p in proto.metadata_props}
    checkpoint = torch.load(ckpt, weights_only=True)
    assert metadata["image_size"] == str(checkpoint["hyper_parameters"]["image_size"])
    assert metadata["tta_flip"] == "true" and json.loads(metadata["class_names"]) == ["non_emergency", "emergency"]
    (graph_input,) = proto.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims, size = graph_input.type.tensor_type.shape.dim, int(metadata["image_size"])
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, size, size]  # any batch size


def test_predict_from_the_onnx_file_writes_the_checkpoints_csv(exported, tmp_path):
    path, ckpt, data = exported
    source = "train.csv"
    if not data:  # the real data: 240 of its images, drawn at random (predicting all 1,646 twice takes a minute)
        rows = read_csv(SHARED_DATA / "train.csv")
        source = tmp_path / "sample.csv"
        write_csv(source, random.Random(0).sample(rows, 240))
    rows = {}
    for name, model in (("ckpt", ckpt), ("onnx", path)):
        cfg = compose_config("predict", tmp_path / name, [f"ckpt_path={model}", f"source={source}", *data])
        rows[name] = read_csv(predict(cfg))
    assert [r["image_names"] for r in rows["ckpt"]] == [r["image_names"] for r in rows["onnx"]]
    assert [r["emergency_or_not"] for r in rows["ckpt"]] == [r["emergency_or_not"] for r in rows["onnx"]]
    for a, b in zip(rows["ckpt"], rows["onnx"]):
        assert abs(float(a["prob_emergency"]) - float(b["prob_emergency"])) <= 2e-6 + 1e-4


def test_onnx_files_are_refused_with_a_reason(exported, tmp_path):
    path, _, data = exported
    cfg = compose_config("predict", tmp_path, [f"ckpt_path={path}", "tta_flip=false", *data])
    with pytest.raises(UserError, match="exported with tta_flip=true"):
        predict(cfg)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cfg = compose_config("predict", tmp_path, [f"ckpt_path={tmp_path / 'junk.onnx'}", *data])
    with pytest.raises(UserError, match="not a readable ONNX model"):
        predict(cfg)
