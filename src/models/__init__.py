"""LightningModules, one per model; each composes nets (from ``arch``) and pure losses (``src.losses``)."""

from src.models.base import AdversarialModel, DivergenceError
from src.models.began import BEGAN
from src.models.ebgan import EBGAN, EBGANPT
from src.models.gan import GAN

__all__ = ["AdversarialModel", "BEGAN", "DivergenceError", "EBGAN", "EBGANPT", "GAN"]
