"""nn.Modules only: generators, classifier discriminators and auto-encoder discriminators.

Every generator exposes ``latent_dim``; every auto-encoder's forward returns (reconstruction,
embedding).
"""

from src.nets.began import BEGANAutoEncoder, BEGANGenerator
from src.nets.dcgan import DCGANAutoEncoder, DCGANClassifier, DCGANGenerator
from src.nets.mlp import MLPAutoEncoder, MLPClassifier, MLPGenerator

__all__ = [
    "BEGANAutoEncoder",
    "BEGANGenerator",
    "DCGANAutoEncoder",
    "DCGANClassifier",
    "DCGANGenerator",
    "MLPAutoEncoder",
    "MLPClassifier",
    "MLPGenerator",
]
