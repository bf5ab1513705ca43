from image_transfer.data.datamodule import CsvImageDataModule

__all__ = ["CsvImageDataModule"]
