from src.callbacks.generative_metrics import GenerativeMetrics, generate
from src.callbacks.sample_grid import SampleGrid

__all__ = ["GenerativeMetrics", "SampleGrid", "generate"]
