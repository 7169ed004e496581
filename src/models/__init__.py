"""LightningModules, one per model; each composes nets (from ``arch``) and pure losses (``src.losses``)."""

from src.models.base import AdversarialModel, DivergenceError
from src.models.began import BEGAN
from src.models.ebgan import EBGAN, EBGANPT
from src.models.gan import CGAN, GAN
from src.models.wgan import WGAN, WGANGP

__all__ = ["AdversarialModel", "BEGAN", "CGAN", "DivergenceError", "EBGAN", "EBGANPT", "GAN", "WGAN", "WGANGP"]
