"""The model behind POST /predict, in each LitServe inference worker: loaded once (setup); each request's images
decoded exactly as predict decodes them (decode_request); the images of concurrent requests predicted as one batch
(batch, predict, unbatch: batches.py); each request answered with its images' classes, probabilities and the decision
rule (encode_response)."""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation, the FastAPI dependency that
# reads the upload, as an object.

from typing import Annotated

import litserve as ls
import torch
from fastapi import Depends
from fastapi.responses import JSONResponse
from omegaconf import OmegaConf
from PIL import Image, UnidentifiedImageError

from image_transfer.data.decode import decode_image, stored_side
from image_transfer.data.transforms import eval_transform
from image_transfer.models.classifier import ImageClassifier
from image_transfer.models.decision import decide
from image_transfer.models.onnx_model import OnnxClassifier
from image_transfer.runs.checkpoints import (
    class_names_of,
    decision_of,
    input_size,
    is_multi_label,
    load_model,
    temperature_of,
)
from image_transfer.serving.batches import Batch, Rejected
from image_transfer.serving.uploads import Upload, read_upload


class ClassifierAPI(ls.LitAPI):
    """`settings`: the serve config, resolved to plain values (LitServe pickles the API into its worker processes)."""

    def __init__(self, settings: dict, **batching):
        super().__init__(**batching)
        self.settings, self.max_pixels = settings, settings["max_pixels"]

    def setup(self, device: str) -> None:
        cfg = OmegaConf.create(self.settings)
        self.model = load_model(cfg.ckpt_path, cfg)
        if isinstance(self.model, ImageClassifier):
            self.model.to(device).eval()
        self.image_size = input_size(self.model)
        self.transform = eval_transform(self.image_size)
        self.class_names, self.multi_label = class_names_of(self.model), is_multi_label(self.model)
        self.rule, self.decision = decision_of(self.model), describe_decision(self.model)

    def decode_request(self, request: Annotated[Upload, Depends(read_upload)]) -> Batch:
        """The request's images as predict gives them to the model (decoded at the size images are cached at, then
        the evaluation transform), or the reason to refuse the request (its first image that fails)."""
        images = []
        for number, data in enumerate(request.images, 1):
            try:
                decoded = decode_image(data, stored_side(self.image_size), self.max_pixels)
            except Exception as error:  # Pillow's plugins raise many types on crafted files: all are the upload's
                status, reason = refusal(error, self.max_pixels)
                where = f"file {number} of {len(request.images)}: " if request.listed else ""
                return Batch.rejected(self.image_size, status, where + reason)
            images.append(self.transform(decoded))
        return Batch.accepted(images, request.listed)

    def batch(self, inputs: list[Batch]) -> Batch:
        return Batch.concat(inputs)

    def predict(self, batch: Batch) -> Batch:
        return batch._replace(probabilities=self.probabilities(batch.images))

    def unbatch(self, output: Batch) -> list[Batch]:
        return output.split()

    def encode_response(self, output: Batch):
        (request,) = output.requests
        if isinstance(request, Rejected):
            # A response, not an HTTPException: raised here, it would fail every request batched with this one.
            return JSONResponse({"detail": request.reason}, status_code=request.status)
        answers = self.answers(output.probabilities)
        return answers if request.listed else answers[0]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) of uint8 images, as predict computes them."""
        if not len(images):  # only refused requests in the batch
            return torch.empty(0, len(self.class_names))
        if isinstance(self.model, OnnxClassifier):
            return torch.from_numpy(self.model.probabilities(images.numpy()))
        with torch.inference_mode():
            return self.model.probabilities(images.to(self.model.device)).float().cpu()

    def answers(self, probs: torch.Tensor) -> list[dict]:
        """Each image's predicted class (multi-label: classes) by the model's decision rule, as predict applies it."""
        answers = []
        for p, chosen in zip(probs.tolist(), decide(probs, self.rule, self.multi_label).tolist()):
            if self.multi_label:
                predicted = {"classes": [name for name, yes in zip(self.class_names, chosen) if yes]}
            else:
                predicted = {"class": self.class_names[chosen]}
            answers.append({**predicted, "probabilities": dict(zip(self.class_names, p)), "decision": self.decision})
        return answers


def refusal(error: Exception, max_pixels: int) -> tuple[int, str]:
    """The HTTP status and one-line reason for an upload the decoder refused."""
    if isinstance(error, Image.DecompressionBombError):
        return 413, f"the image is too large to decode ({error}): the limit is max_pixels={max_pixels}."
    if isinstance(error, UnidentifiedImageError):
        return 422, "not an image Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF ...)."
    return 422, f"a damaged or truncated image ({type(error).__name__}: {' '.join(str(error).split())})."


def describe_decision(model: ImageClassifier | OnnxClassifier) -> dict:
    """How each answer's class is chosen, and the temperature its probabilities are calibrated with."""
    names, rule = class_names_of(model), decision_of(model) or {}
    if is_multi_label(model):
        thresholds = rule.get("thresholds") or [0.5] * len(names)
        described = {"rule": rule.get("rule", "p >= 0.5 per class"), "thresholds": dict(zip(names, thresholds))}
    elif rule.get("threshold") is not None:
        positive = names[int(rule["positive"])]
        described = {"rule": rule["rule"], "positive_class": positive, "threshold": rule["threshold"]}
    else:
        described = {"rule": "the most probable class"}
    temperature = temperature_of(model)
    if temperature is not None:
        described["temperature"] = temperature[0] if len(set(temperature)) == 1 else dict(zip(names, temperature))
    return described
