from src.data.datamodule import ImageDataModule, InMemoryBatches, to_signed_unit
from src.data.idx import DATASETS, DatasetError, load_split

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageDataModule",
    "InMemoryBatches",
    "load_split",
    "to_signed_unit",
]
