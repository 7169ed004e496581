"""A GAN conditioned on clusters of the training images instead of class labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.data.clusters import kmeans, nearest_centroid
from src.data.datamodule import to_signed_unit
from src.models.gan import GAN, check_conditioned
from src.utils.rules import integer

#: the last k-means result (key: the images' storage and shape, k, iterations, seed, subset size)
_CLUSTERINGS: dict = {}


class ClusterGAN(GAN):
    """Cluster-conditioned GAN, after the self-conditioned GAN (Liu et al. 2020, Sec. 3): k-means
    (``num_clusters``) on the training images gives every image a cluster y; D(x | y) and G(z | y)
    are the cGAN's nets and objectives (Mirza & Osindero 2014 Eq. 2) with y in place of a class
    label. Unconditional: no labels are read. Sampling draws y from the clusters' empirical
    frequencies, so the mixture weights are the data's by construction, and each conditional
    p(x | y) is closer to one mode than p(x). Here the clusters are fixed, from the pixels (Liu et
    al. re-cluster D's features during training).

    The last ``num_clusters`` inputs of the model's latent carry y one-hot (``sample_latent``), so
    every caller (scores, EMA, sample.py, interpolate.py) sees one latent vector and no labels.
    """

    display_name = "cluster GAN"
    knob_rules = {
        "num_clusters": integer(2),
        "cluster_iterations": integer(1),
        "cluster_seed": integer(0),
    }

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        discriminator_objective,
        generator_objective,
        num_clusters: int = 50,
        cluster_iterations: int = 30,
        cluster_seed: int = 0,
        **loop_options,
    ):
        if num_clusters < 2:
            raise ValueError(f"model.num_clusters must be >= 2, got {num_clusters}")
        check_conditioned(generator, discriminator, num_clusters, "model=cluster_gan", "clusters")
        super().__init__(
            generator,
            discriminator,
            optimizer_g,
            optimizer_d,
            discriminator_objective,
            generator_objective,
            **loop_options,
        )
        self.num_clusters = num_clusters
        self.cluster_iterations = cluster_iterations
        self.cluster_seed = cluster_seed
        pixels = _image_numel(generator)
        # in the checkpoint: a loaded model samples and assigns clusters without the data
        self.register_buffer("centroids", torch.zeros(num_clusters, pixels))
        self.register_buffer("cluster_frequencies", torch.zeros(num_clusters))
        # a Python flag, so that sampling (every training step) needs no host sync to check it
        self.has_clusters = False
        self.register_load_state_dict_post_hook(_note_loaded_clusters)

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim + self.num_clusters

    def prepare_fit(self, datamodule) -> None:
        # On resume this runs too (Lightning restores the checkpoint after the setup hooks); the
        # restore then overwrites the clusters with the saved ones, which the seeded k-means equals.
        if not self.has_clusters:
            datamodule.setup("fit")
            self.fit_clusters(datamodule.splits["train"][0])

    def fit_clusters(self, images_uint8: torch.Tensor, max_points: int = 60000) -> None:
        """k-means on the training images as the model sees them ([-1, 1], flattened); on a seeded
        subset of ``max_points`` when there are more (a 64 px image folder would not fit)."""
        # the members of a population cluster the same images alike: computed once (the key holds
        # a sample of the pixels too, should another image set reuse the memory)
        key = (images_uint8.data_ptr(), tuple(images_uint8.shape), int(images_uint8[::97].sum()))
        key += (self.num_clusters, self.cluster_iterations, self.cluster_seed, max_points)
        if images_uint8.shape[0] > max_points:
            rng = torch.Generator().manual_seed(self.cluster_seed)
            images_uint8 = images_uint8[
                torch.randperm(images_uint8.shape[0], generator=rng)[:max_points]
            ]
        points = to_signed_unit(images_uint8).flatten(1)
        if points.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"training images have {points.shape[1]} pixels, G makes {self.centroids.shape[1]}"
            )
        if key not in _CLUSTERINGS:
            _CLUSTERINGS.clear()
            _CLUSTERINGS[key] = kmeans(
                points, self.num_clusters, self.cluster_iterations, seed=self.cluster_seed
            )
        centroids, assignments = _CLUSTERINGS[key]
        self.centroids.copy_(centroids)
        counts = torch.bincount(assignments, minlength=self.num_clusters).float()
        self.cluster_frequencies.copy_(counts / counts.sum())
        self.has_clusters = True

    def batch_labels(self, batch) -> torch.Tensor:
        """The clusters of the real batch's images (nearest centroid); the fakes of the batch are
        drawn for the same clusters, as the cGAN's are for the same labels."""
        return nearest_centroid(batch[0].flatten(1), self.centroids)

    def sample_latent(self, n, generator=None, device=None):
        if not self.has_clusters:
            raise RuntimeError(
                "ClusterGAN has no clusters yet: they are fitted when training starts (or loaded "
                "with a checkpoint)"
            )
        z = super().sample_latent(n, generator=generator, device=device)
        clusters = torch.multinomial(
            self.cluster_frequencies.to(z.device), n, replacement=True, generator=generator
        )
        z[:, -self.num_clusters :] = F.one_hot(clusters, self.num_clusters).to(z.dtype)
        return z

    def forward(self, z, labels=None):
        """G(noise | y): y is ``labels`` when given (training: the real batch's clusters), else the
        one-hot tail of z (argmax: an interpolated latent keeps its dominant cluster)."""
        generator = self.generator if self.training else self.sampling_generator
        noise, code = z[:, : -self.num_clusters], z[:, -self.num_clusters :]
        return generator(noise, code.argmax(1) if labels is None else labels)


def _note_loaded_clusters(module, incompatible_keys) -> None:
    """After load_state_dict: the model has clusters if the loaded frequencies hold any."""
    module.has_clusters = bool(module.cluster_frequencies.sum() > 0)


@torch.no_grad()
def _image_numel(generator) -> int:
    """Pixels of one G image, read from one eval-mode forward (no statistics move)."""
    mode = generator.training
    generator.eval()
    try:
        z = torch.zeros(1, generator.latent_dim)
        return generator(z, torch.zeros(1, dtype=torch.long))[0].numel()
    finally:
        generator.train(mode)
