"""A classifier as an ONNX file for deployment, and ONNX Runtime predicting with it.

The graph takes uint8 images (N, 3, H, W) at the checkpoint's input size, any N, and gives calibrated class
probabilities (N, classes) and the predicted class of each image (N,) by the checkpoint's decision rule: the
normalisation, the flip TTA when the checkpoint uses it, the temperature and the threshold are inside it, so no user
can forget them. The file's metadata holds the class count and input size, the class names and the decision rule,
which predict reads back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from image_transfer.errors import UserError
from image_transfer.files import write_atomically
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.decision import decide

log = logging.getLogger(__name__)

INPUT, OUTPUT, LABELS = "images", "probabilities", "labels"
TOLERANCE = 1e-4  # largest difference of a probability allowed between ONNX Runtime and PyTorch


class Predictions(nn.Module):
    """uint8 images -> (class probabilities, exactly what ImageClassifier.predict_step computes; the predicted
    classes under its decision rule)."""

    def __init__(self, classifier: ImageClassifier):
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.classifier.probabilities(images)
        return probs, self.classifier.decide(probs)


def export_onnx(
    model: ImageClassifier, path: Path, class_names: list[str] | None = None, data_settings: dict | None = None
) -> dict:
    """Write `model` to `path` as ONNX (with a dynamic batch axis) once ONNX Runtime reproduces PyTorch on random
    batches of 1 and 3 images; returns the metadata written into the file. `data_settings`, the data module settings
    of the model's run, let `predict` read the same data as from its checkpoint."""
    import onnx

    wrapped, size = Predictions(model.cpu()).eval(), model.hparams.image_size
    # A batch of at least 2: torch.export specialises an axis whose example size is 1.
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            input_names=[INPUT],
            output_names=[OUTPUT, LABELS],
            dynamic_shapes={"images": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    metadata = {
        "image_size": str(size),
        "num_classes": str(model.hparams.num_classes),
        "tta_flip": str(bool(model.hparams.tta_flip)).lower(),
        "multi_label": str(bool(model.hparams.multi_label)).lower(),
        "backbone": model.hparams.backbone,
        "class_names": json.dumps(class_names or []),
        "decision": json.dumps(model.hparams.get("decision")),
        "temperature": json.dumps(model.temperature.tolist()),
        "data_settings": json.dumps(data_settings or {}),
        "input": "uint8 images (N, 3, H, W), RGB, H = W = image_size; outputs: calibrated class probabilities "
        "(N, classes) and the predicted class index (N,) by the decision rule",
    }
    onnx.helper.set_model_props(proto, metadata)
    data = proto.SerializeToString()
    for count in (1, 3):
        images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator())
        check_parity(model, OnnxClassifier.from_bytes(data), images)
    write_atomically(path, data)
    log.info("wrote %s (%.1f MB): %s", path, len(data) / 1e6, metadata)
    return metadata


def check_parity(model: ImageClassifier, session: OnnxClassifier, images: torch.Tensor) -> float:
    """The largest difference of a probability between ONNX Runtime and PyTorch on `images`; raises above
    TOLERANCE."""
    with torch.no_grad():
        expected = Predictions(model)(images)[0].numpy()
    probs, predicted = session.run(images.numpy())
    difference = float(np.abs(probs - expected).max())
    if difference > TOLERANCE:
        raise RuntimeError(f"the exported graph differs from PyTorch by {difference:.2e} (> {TOLERANCE}): not written")
    # The graph's classes are its own probabilities' under the rule (PyTorch's may differ within TOLERANCE of it).
    decided = decide(torch.from_numpy(probs), model.hparams.get("decision"), model.hparams.multi_label).numpy()
    if (decided != predicted).any():
        raise RuntimeError("the exported graph's predicted classes differ from its decision rule: not written")
    return difference


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime (CPU), with its metadata."""

    def __init__(self, session, source: str):
        self.session, self.source = session, source
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        if "image_size" not in self.metadata:
            raise UserError(f"{source} was not written by image_transfer.export (no image_size in its metadata).")
        self.image_size = int(self.metadata["image_size"])
        self.num_classes = int(self.metadata["num_classes"])
        self.tta_flip = self.metadata.get("tta_flip") == "true"
        self.class_names = json.loads(self.metadata.get("class_names") or "[]")
        self.data_settings = json.loads(self.metadata.get("data_settings") or "{}") or None
        self.decision = json.loads(self.metadata.get("decision") or "null")  # null in files exported before rules
        self.temperature = json.loads(self.metadata.get("temperature") or "null")  # per class; null likewise
        self.multi_label = self.metadata.get("multi_label") == "true"

    @classmethod
    def load(cls, path: Path) -> OnnxClassifier:
        try:
            session = _session(str(path))
        except Exception as error:  # ONNX Runtime's own exception types live in a private module
            message = " ".join(str(error).split())[:200]
            raise UserError(f"ckpt_path={path} is not a readable ONNX model ({message}).") from error
        return cls(session, str(path))

    @classmethod
    def from_bytes(cls, data: bytes) -> OnnxClassifier:
        return cls(_session(data), "<exported graph>")

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs: probabilities, and (files exported since decision rules) predicted classes."""
        names = [o.name for o in self.session.get_outputs()]
        return self.session.run(names, {INPUT: np.ascontiguousarray(images, dtype=np.uint8)})

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]


def _session(model: str | bytes):
    """An ONNX Runtime session on the CPU with as many threads as torch may use (torch.set_num_threads,
    OMP_NUM_THREADS): one setting governs both, where ONNX Runtime alone would take every core."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
