"""The seed article's baseline: two convolutional layers and a dense layer, trained from scratch."""

from torch import nn


def baseline_cnn(image_size: int, hidden: int = 128, dropout: float = 0.25) -> nn.Sequential:
    """Feature extractor ending in the dense layer; the classifier adds the final class layer."""

    def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 5, padding=2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(4)]

    side = image_size // 16  # two 4x poolings
    return nn.Sequential(
        *conv_block(3, 16),
        *conv_block(16, 32),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(32 * side * side, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
    )
