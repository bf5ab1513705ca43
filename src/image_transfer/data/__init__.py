from image_transfer.data.datamodule import ImageDataModule

__all__ = ["ImageDataModule"]
