from src.callbacks.checkpoint import EpochCheckpoint
from src.callbacks.generative_metrics import GenerativeMetrics
from src.callbacks.interrupt import CheckpointOnInterrupt
from src.callbacks.progress_bar import ThrottledRichProgressBar
from src.callbacks.sample_grid import SampleGrid

__all__ = [
    "CheckpointOnInterrupt",
    "EpochCheckpoint",
    "GenerativeMetrics",
    "SampleGrid",
    "ThrottledRichProgressBar",
]
