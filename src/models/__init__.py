"""LightningModules, one per model; each composes nets (``arch``) and pure losses (src.losses)."""

from src.models.base import AdversarialModel, DivergenceError
from src.models.began import BEGAN
from src.models.cluster_gan import ClusterGAN
from src.models.ebgan import EBGAN, EBGANPT
from src.models.gan import CGAN, GAN, InfoGAN
from src.models.translation import CycleGAN, Pix2Pix
from src.models.vae import VAE, VAEGAN
from src.models.wgan import WGAN, WGANGP
from src.utils.runtime import skip_failing_nvml_probe

skip_failing_nvml_probe()  # after Lightning's import, which sets the NVML check (see its docstring)

__all__ = [
    "AdversarialModel",
    "BEGAN",
    "CGAN",
    "ClusterGAN",
    "DivergenceError",
    "EBGAN",
    "EBGANPT",
    "GAN",
    "InfoGAN",
    "CycleGAN",
    "Pix2Pix",
    "VAE",
    "VAEGAN",
    "WGAN",
    "WGANGP",
]
