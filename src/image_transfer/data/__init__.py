"""Tables, splits, decoding, caches and batches; ImageDataModule (the configs' `image_transfer.data.ImageDataModule`)
joins them for Lightning. It is imported on first use, so that what only reads tables (scripts/prepare_data.py,
scripts/load_test.py) starts without importing Lightning."""

__all__ = ["ImageDataModule"]


def __getattr__(name: str):
    if name == "ImageDataModule":
        from image_transfer.data.datamodule import ImageDataModule

        return ImageDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
