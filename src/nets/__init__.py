"""nn.Modules only: generators, classifier discriminators and auto-encoder discriminators.

Every generator exposes ``latent_dim``; every auto-encoder's forward returns (reconstruction,
embedding); every VAE encoder's returns (mu, log sigma^2). Translation generators map images to
images (``in_channels`` -> ``out_channels``); a PatchGAN returns a map of patch logits.
"""

from src.nets.began import BEGANAutoEncoder, BEGANGenerator
from src.nets.dcgan import DCGANAutoEncoder, DCGANClassifier, DCGANEncoder, DCGANGenerator
from src.nets.mlp import MLPAutoEncoder, MLPClassifier, MLPEncoder, MLPGenerator
from src.nets.translation import PatchDiscriminator, ResnetGenerator, UNetGenerator

__all__ = [
    "BEGANAutoEncoder",
    "BEGANGenerator",
    "DCGANAutoEncoder",
    "DCGANClassifier",
    "DCGANEncoder",
    "DCGANGenerator",
    "MLPAutoEncoder",
    "MLPClassifier",
    "MLPEncoder",
    "MLPGenerator",
    "PatchDiscriminator",
    "ResnetGenerator",
    "UNetGenerator",
]
