from src.data.datamodule import ImageDataModule, InMemoryBatches, to_signed_unit
from src.data.idx import DATASETS, DatasetError, load_split
from src.data.image_folder import ImageFolderDataModule
from src.data.translation import TASKS, TranslationDataModule

__all__ = [
    "DATASETS",
    "DatasetError",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryBatches",
    "TASKS",
    "TranslationDataModule",
    "load_split",
    "to_signed_unit",
]
