"""LightningModules, one per model; each composes nets (from ``arch``) and pure losses (``src.losses``)."""

from src.models.base import AdversarialModel, DivergenceError
from src.models.began import BEGAN
from src.models.ebgan import EBGAN, EBGANPT
from src.models.gan import GAN
from src.utils.runtime import skip_failing_nvml_probe

skip_failing_nvml_probe()  # after Lightning's import, which sets the NVML check (see its docstring)

__all__ = ["AdversarialModel", "BEGAN", "DivergenceError", "EBGAN", "EBGANPT", "GAN"]
