"""Image-to-image translation: pix2pix (Isola et al. 2017) on paired data and CycleGAN (Zhu et al.
2017) on unpaired domains. Batches are (a, b, labels_a, labels_b) from src.data.translation;
``translate(a)`` maps domain A to B (``translate_back(b)``: B to A, CycleGAN only)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from src.losses import cycle_consistency_loss, identity_loss, l1_distance
from src.models.base import ManualLoop, OptimizerFactory, frozen
from src.nets.batch_norm import batch_statistics
from src.utils.rules import boolean, integer, number


@contextmanager
def as_in_training(net: nn.Module):
    """pix2pix's test protocol (Sec. 3.1 / 6.1): dropout on and batch norm on the statistics of
    the batch at hand, as in training; running statistics left unchanged, modes restored."""
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    modes = [m.training for m in dropouts]
    with batch_statistics(net):
        for m in dropouts:
            m.train()
        try:
            yield net
        finally:
            for m, mode in zip(dropouts, modes, strict=True):
                m.train(mode)


class Translator(ManualLoop):
    """Base of the translation models: the shared loop habits (ManualLoop), the objectives from
    the ``loss`` group (D's halved, as both papers do "while optimizing D"), validation L1 and the
    translation helpers the callbacks and scripts call."""

    #: the scripts and callbacks ask this to tell translators from samplers
    is_translator = True
    #: only paired data fits (pix2pix); the config check names the paired tasks
    needs_pairs = False
    discriminator_role = None
    loss_family = "classifier"
    num_classes = 0

    def __init__(
        self,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        discriminator_objective: Callable,
        generator_objective: Callable,
        check_finite_every_n_steps: int = 10,
        run_config: dict | None = None,
    ):
        super().__init__(check_finite_every_n_steps, run_config)
        self.optimizer_g_factory = optimizer_g
        self.optimizer_d_factory = optimizer_d
        self.discriminator_objective = discriminator_objective
        self.generator_objective = generator_objective

    def translate(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        logs = self.validation_values(*batch)
        self._log_validation(logs, batch[0].shape[0])

    def validation_values(self, a, b, labels_a, labels_b) -> dict:
        raise NotImplementedError


class Pix2Pix(Translator):
    """Isola et al. 2017 Eq. 4: G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G), lambda = 100.

    D is a PatchGAN on (input, image) pairs (the two stacked as channels): real (a, b) against
    (a, G(a)); G's adversarial term is the ``loss`` group's generator objective (the paper's
    non-saturating log D form: ``bce_ns``). ``adversarial_weight`` 0 is the paper's "L1 alone"
    ablation (D is then not trained). G's noise is its dropout, also at test time
    (``test_time_noise``, the paper's protocol: dropout on, batch statistics)."""

    display_name = "pix2pix"
    knob_rules = {
        "l1_weight": number(0),
        "adversarial_weight": number(0),
        "test_time_noise": boolean(),
    }

    needs_pairs = True

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        discriminator_objective: Callable,
        generator_objective: Callable,
        l1_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        test_time_noise: bool = True,
        **loop_options,
    ):
        if l1_weight < 0 or adversarial_weight < 0:
            raise ValueError(
                f"model.l1_weight and model.adversarial_weight must be >= 0, got {l1_weight}, "
                f"{adversarial_weight}"
            )
        if discriminator.in_channels != generator.in_channels + generator.out_channels:
            raise ValueError(
                f"the pix2pix D sees (input, image) pairs: it needs {generator.in_channels} + "
                f"{generator.out_channels} input channels, got {discriminator.in_channels}"
            )
        super().__init__(
            optimizer_g, optimizer_d, discriminator_objective, generator_objective, **loop_options
        )
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = l1_weight
        self.adversarial_weight = adversarial_weight
        self.test_time_noise = test_time_noise

    def configure_optimizers(self):
        return [
            self.optimizer_g_factory(self.generator.parameters()),
            self.optimizer_d_factory(self.discriminator.parameters()),
        ]

    def translate(self, a: torch.Tensor) -> torch.Tensor:
        """G(a); outside training with ``test_time_noise`` as the paper tests (dropout, batch
        statistics)."""
        if self.training or not self.test_time_noise:
            return self.generator(a)
        with as_in_training(self.generator):
            return self.generator(a)

    def discriminate(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([a, b], dim=1))

    def training_step(self, batch, batch_idx: int) -> None:
        a, b = batch[0], batch[1]
        optimizer_g, optimizer_d = self.optimizers()
        self.train_batches_seen += 1
        check = self._check_now(batch_idx)
        fake = self.generator(a)
        logs = {}
        adversarial = self.adversarial_weight > 0
        if adversarial:
            real_scores = self.discriminate(a, b)
            fake_scores = self.discriminate(a, fake.detach())
            loss_d = 0.5 * self.discriminator_objective(real_scores, fake_scores)
            self._update(optimizer_d, loss_d, "discriminator loss", check)
            logs.update(
                loss_d=loss_d.detach(),
                d_real=real_scores.detach().mean(),
                d_fake=fake_scores.detach().mean(),
            )
        with frozen(self.discriminator):
            l1 = l1_distance(fake, b)
            loss_g = self.l1_weight * l1
            if adversarial:
                gan = self.generator_objective(self.discriminate(a, fake))
                loss_g = loss_g + self.adversarial_weight * gan
                logs["g_adversarial"] = gan.detach()
            self._update(optimizer_g, loss_g, "generator loss", check)
        self._log_train({**logs, "loss_g": loss_g.detach(), "l1": l1.detach()})

    def validation_values(self, a, b, labels_a, labels_b) -> dict:
        # [0, 1] pixel scale, as evaluate.py's l1; "split_": the validation split, not the test
        # images the metrics callback scores
        return {"split_l1": l1_distance(self.translate(a), b) / 2}


class ImagePool(nn.Module):
    """The history of generated images D is trained on (Shrivastava et al. 2017; CycleGAN Sec. 4):
    until ``size`` images are stored each new one is stored and used; then each new image is, with
    probability 1/2, swapped for a random stored one (which D sees instead), else used as is.
    Buffers: the pool and its fill count travel in the checkpoint, so a resume continues it."""

    def __init__(self, size: int, image_shape: tuple[int, int, int]):
        super().__init__()
        if size < 0:
            raise ValueError(f"model.pool_size must be >= 0, got {size}")
        self.size = size
        self.register_buffer("images", torch.zeros(size, *image_shape))
        self.register_buffer("stored", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, batch: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return batch
        out = batch.clone()
        stored = int(self.stored)
        fill = min(self.size - stored, batch.shape[0])
        if fill > 0:
            self.images[stored : stored + fill] = batch[:fill]
            self.stored += fill
        rest = batch.shape[0] - fill
        if rest > 0:
            # one draw per image, in order: the same images as the authors' per-image loop
            swap = (torch.rand(rest, device=batch.device) < 0.5).tolist()
            slots = torch.randint(0, self.size, (rest,), device=batch.device).tolist()
            for i, slot in enumerate(slots):
                if not swap[i]:
                    continue
                out[fill + i] = self.images[slot]
                self.images[slot] = batch[fill + i]
        return out


class CycleGAN(Translator):
    """Zhu et al. 2017 Eq. 3: L(G, F, D_X, D_Y) = L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda L_cyc,
    lambda = 10, plus the identity term 0.5 lambda L_identity (Sec. 5.2); least-squares objectives
    (``loss=least_squares``). G: A -> B is ``generator_ab``, F: B -> A ``generator_ba``. Per batch,
    as the authors' code: one update of both G's, then one of both D's on images drawn from the
    history pools. The learning rate stays constant, then decays linearly to zero over the last
    ``decay_epochs`` (default: the second half of ``trainer.max_epochs``)."""

    display_name = "CycleGAN"
    knob_rules = {
        "cycle_weight": number(0),
        "identity_weight": number(0),
        "pool_size": integer(0),
        "decay_epochs": integer(0, nullable=True),
    }

    def __init__(
        self,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        discriminator_objective: Callable,
        generator_objective: Callable,
        image_shape_a: tuple[int, int, int],
        image_shape_b: tuple[int, int, int],
        cycle_weight: float = 10.0,
        identity_weight: float = 0.5,
        pool_size: int = 50,
        decay_epochs: int | None = None,
        **loop_options,
    ):
        if cycle_weight < 0 or identity_weight < 0:
            raise ValueError(
                f"model.cycle_weight and model.identity_weight must be >= 0, got {cycle_weight}, "
                f"{identity_weight}"
            )
        if identity_weight > 0 and image_shape_a[0] != image_shape_b[0]:
            raise ValueError(
                f"model.identity_weight > 0 feeds each domain's images to the other's generator: "
                f"it needs equal channels, got {image_shape_a[0]} and {image_shape_b[0]} "
                f"(set model.identity_weight=0)"
            )
        if decay_epochs is not None and decay_epochs < 0:
            raise ValueError(f"model.decay_epochs must be >= 0 or null, got {decay_epochs}")
        super().__init__(
            optimizer_g, optimizer_d, discriminator_objective, generator_objective, **loop_options
        )
        self.generator_ab, self.generator_ba = generator_ab, generator_ba
        self.discriminator_a, self.discriminator_b = discriminator_a, discriminator_b
        self.cycle_weight = cycle_weight
        self.identity_weight = identity_weight
        self.decay_epochs = decay_epochs
        self.pool_a = ImagePool(pool_size, tuple(image_shape_a))
        self.pool_b = ImagePool(pool_size, tuple(image_shape_b))

    # ----------------------------------------------------------------- optimisation
    def learning_rate_factor(self, epoch: int) -> float:
        """1 for the first max_epochs - decay_epochs epochs, then linear to 1 / (decay + 1) in the
        last (the authors' rule: 1 - max(0, e + 1 - n_constant) / (n_decay + 1))."""
        total = self.trainer.max_epochs
        decay = total // 2 if self.decay_epochs is None else min(self.decay_epochs, total)
        return 1.0 - max(0, epoch + 1 - (total - decay)) / (decay + 1)

    def configure_optimizers(self):
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 1:
            raise ValueError(
                "model=cyclegan decays its learning rate over the second half of training: set "
                "trainer.max_epochs (>= 1)"
            )
        generators = itertools.chain(self.generator_ab.parameters(), self.generator_ba.parameters())
        discriminators = itertools.chain(
            self.discriminator_a.parameters(), self.discriminator_b.parameters()
        )
        optimizers = [
            self.optimizer_g_factory(generators),
            self.optimizer_d_factory(discriminators),
        ]
        schedulers = [
            torch.optim.lr_scheduler.LambdaLR(optimizer, self.learning_rate_factor)
            for optimizer in optimizers
        ]
        return optimizers, schedulers

    def on_train_epoch_end(self) -> None:
        # the factor of the next epoch; saved with the checkpoint written after this hook
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ----------------------------------------------------------------- translation
    def translate(self, a: torch.Tensor) -> torch.Tensor:
        return self.generator_ab(a)

    def translate_back(self, b: torch.Tensor) -> torch.Tensor:
        return self.generator_ba(b)

    def training_step(self, batch, batch_idx: int) -> None:
        a, b = batch[0], batch[1]
        optimizer_g, optimizer_d = self.optimizers()
        self.train_batches_seen += 1
        check = self._check_now(batch_idx)

        fake_b, fake_a = self.generator_ab(a), self.generator_ba(b)
        with frozen(self.discriminator_a), frozen(self.discriminator_b):
            adversarial_ab = self.generator_objective(self.discriminator_b(fake_b))
            adversarial_ba = self.generator_objective(self.discriminator_a(fake_a))
            cycle = cycle_consistency_loss(
                a, self.generator_ba(fake_b), b, self.generator_ab(fake_a)
            )
            loss_g = adversarial_ab + adversarial_ba + self.cycle_weight * cycle
            logs = {}
            if self.identity_weight > 0:
                identity = identity_loss(a, self.generator_ba(a), b, self.generator_ab(b))
                loss_g = loss_g + self.identity_weight * self.cycle_weight * identity
                logs["identity"] = identity.detach()
            self._update(optimizer_g, loss_g, "generator loss", check)

        pooled_a, pooled_b = self.pool_a.query(fake_a.detach()), self.pool_b.query(fake_b.detach())
        loss_d_a = 0.5 * self.discriminator_objective(
            self.discriminator_a(a), self.discriminator_a(pooled_a)
        )
        loss_d_b = 0.5 * self.discriminator_objective(
            self.discriminator_b(b), self.discriminator_b(pooled_b)
        )
        # disjoint parameters: one backward of the sum gives each D its own gradient
        self._update(optimizer_d, loss_d_a + loss_d_b, "discriminator loss", check)
        self._log_train(
            {
                **logs,
                "loss_g": loss_g.detach(),
                "g_adversarial_ab": adversarial_ab.detach(),
                "g_adversarial_ba": adversarial_ba.detach(),
                "cycle": cycle.detach(),
                "loss_d_a": loss_d_a.detach(),
                "loss_d_b": loss_d_b.detach(),
                "lr": optimizer_g.param_groups[0]["lr"],
            }
        )

    def validation_values(self, a, b, labels_a, labels_b) -> dict:
        a_to_b, b_to_a = self.generator_ab(a), self.generator_ba(b)
        return {  # [0, 1] pixel scale, on the validation split
            "split_cycle_l1_a": l1_distance(self.generator_ba(a_to_b), a) / 2,
            "split_cycle_l1_b": l1_distance(self.generator_ab(b_to_a), b) / 2,
        }
