"""The shared adversarial training loop: manual optimisation, D step(s) then a G step per batch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager

import torch
from lightning import LightningModule
from torch import nn

from src.models.cuda_graphs import CapturedStep, learning_rates, make_capturable
from src.nets.batch_norm import batch_statistics
from src.utils.rules import Rule, boolean, choice, integer, number

OptimizerFactory = Callable[..., torch.optim.Optimizer]
LATENT_DISTRIBUTIONS = ("normal", "uniform")
VALIDATION_SEED = (
    1_000_003  # validation batch i draws its latents from a generator seeded with this + i
)


@contextmanager
def frozen(module: nn.Module):
    """``requires_grad`` off for ``module``'s trainable parameters in the block, restored after."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


class DivergenceError(RuntimeError):
    """A loss became NaN/inf; raised (not logged): no checkpoint with broken weights is written."""

    def __init__(self, loss_name: str, batch: int, epoch: int):
        super().__init__(f"non-finite {loss_name} at training batch {batch} (epoch {epoch})")
        self.loss_name = loss_name
        self.batch = batch
        self.epoch = epoch


class ManualLoop(LightningModule):
    """What every model family shares: manual optimisation, a per-process batch counter (never
    ``global_step``, which counts every optimizer step), the NaN/inf check on an interval, logging
    on the trainer's interval, the run config and RNG state in every checkpoint, and the DDP replica
    check. Families (adversarial generators, translators) add their own step on top."""

    #: the name reports and figures give this model (``model=`` options are file names)
    display_name: str = ""
    #: rules of this class's own ``model.*`` keys (src/config/schema.py collects them over the MRO)
    knob_rules: dict[str, Rule] = {"check_finite_every_n_steps": integer(1)}

    #: why ``hydra/launcher=population`` trains this model's jobs one by one (None: it stacks them).
    #: Models with a training step of their own say so; the shared adversarial step stacks.
    population_refusal: str | None = (
        "it has its own training step (not the shared adversarial D/G step a population runs)"
    )

    def __init__(self, check_finite_every_n_steps: int = 10, run_config: dict | None = None):
        super().__init__()
        if check_finite_every_n_steps < 1:
            raise ValueError(
                f"model.check_finite_every_n_steps must be >= 1, got {check_finite_every_n_steps}"
            )
        self.automatic_optimization = False
        self.check_finite_every_n_steps = check_finite_every_n_steps
        self.train_batches_seen = (
            0  # this process's count, for log/check intervals (never global_step)
        )
        # the run's resolved config, saved in every checkpoint: evaluate.py / sample.py rebuild the
        # model from it
        self.run_config = run_config

    def _log_validation(self, logs: dict, batch_size: int) -> None:
        """Held-out values as epoch means ``val/<name>``; under DDP the mean over every process's
        share of the val split."""
        self.log_dict(
            {f"val/{k}": v for k, v in logs.items()},
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )

    def _check_now(self, batch_idx: int) -> bool:
        """Whether this batch's losses are checked for NaN/inf: every n-th batch and always the
        epoch's last (no NaN weights reach an epoch-end checkpoint)."""
        return (
            self.train_batches_seen % self.check_finite_every_n_steps == 0
            or batch_idx + 1 >= self.trainer.num_training_batches
        )

    def _log_train(self, logs: dict) -> None:
        """Training values as ``train/<name>``, on the trainer's logging interval only."""
        if self._is_log_step():
            self.log_dict(
                {f"train/{k}": v for k, v in logs.items()},
                on_step=True,
                on_epoch=False,
                prog_bar=False,
            )

    def _update(self, optimizer, loss: torch.Tensor, name: str, check_finite: bool) -> None:
        """zero_grad -> manual_backward -> step; a non-finite loss is refused before the step."""
        if check_finite:
            self._raise_if_not_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def _is_log_step(self) -> bool:
        # self.log on every step costs more than a small MLP step: only on the trainer's interval
        if self._trainer is None:  # outside a Trainer (benchmarks, notebooks) nothing is logged
            return False
        # when Lightning writes logs
        return self.train_batches_seen % max(self.trainer.log_every_n_steps, 1) == 0

    def _raise_if_not_finite(self, loss: torch.Tensor, name: str) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self._trainer is not None and self.trainer.world_size > 1:
            # every process stops together (a rank left waiting in an all-reduce would hang)
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise DivergenceError(name, self.train_batches_seen, self.current_epoch)

    def on_train_end(self) -> None:
        """Under DDP: do all processes hold the same weights? (They must: each steps on the same
        all-reduced gradients.) Recorded in metrics.json as ``distributed.replicas_identical``.
        Parameters only: batch-norm running statistics follow each process's own batches and are
        re-broadcast from rank 0 at every step (DDP's ``broadcast_buffers``)."""
        if self.trainer.world_size < 2:
            return
        flat = torch.cat([p.detach().double().flatten() for p in self.parameters()])
        checksum = torch.stack([flat.sum(), flat.square().sum()])
        gathered = self.trainer.strategy.all_gather(checksum)
        self.replicas_identical = bool((gathered == gathered[0]).all())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        # a CUDA-graph capture turned `capturable` on; saved off, so the run resumes anywhere (on a
        # CPU a capturable Adam refuses to step) and a resumed capture turns it on again
        for state in checkpoint.get("optimizer_states", []):
            for group in state.get("param_groups", []):
                if group.get("capturable"):
                    group["capturable"] = False
        # latents and dropout draw from the global RNGs: saved, so a resumed run continues them
        checkpoint["rng_state"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("rng_state")
        if state is not None:
            torch.set_rng_state(state["torch"])
            if (
                state["cuda"]
                and torch.cuda.is_available()
                and len(state["cuda"]) == torch.cuda.device_count()
            ):
                torch.cuda.set_rng_state_all(state["cuda"])


class AdversarialModel(ManualLoop):
    """Base class of every model: subclasses supply the two losses and declare what they need.

    Every training batch is one discriminator update (its own real batch and fresh z, as in
    Goodfellow et al. 2014 Alg. 1 and Arjovsky et al. 2017 Alg. 1); every ``d_steps_per_g_step``-th
    batch (k, n_critic) is followed by one generator update on that batch's fake images, each as
    zero_grad -> manual_backward -> step. G runs forward once per batch. D's loss sees the fake
    batch detached, so G gets no gradients in a D step; D's parameters are frozen (``requires_grad``
    off) during the G step, so D gets none in it. This is what Lightning's
    toggle_optimizer / untoggle_optimizer do, at a fraction of their cost.

    Class-conditional models set ``num_classes`` > 0: the batch's labels then condition both nets
    (the fakes of a batch are drawn for the labels of its real images) and reach the losses as
    ``labels``.
    """

    knob_rules = {
        "d_steps_per_g_step": integer(1),
        "latent_distribution": choice(*LATENT_DISTRIBUTIONS),
        "compile": boolean(),
        "cuda_graphs": boolean(),
        "ema_decay": number(0, 1, low_open=True, high_open=True, nullable=True),
    }

    #: key of ``arch.discriminators`` this model trains: "classifier", "critic" or "autoencoder"
    discriminator_role: str = "classifier"
    #: the ``family`` a ``loss`` group option must declare to fit this model
    loss_family: str = "classifier"
    #: > 0 for class-conditional models: G and D then take the labels as a second input
    num_classes: int = 0
    population_refusal = None
    #: constructor arguments (stored as attributes of the same name, numbers) that members of one
    #: population may set apart: each member's value reaches its losses and hooks as a tensor
    member_hparams: tuple[str, ...] = ()

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        d_steps_per_g_step: int = 1,
        latent_distribution: str = "normal",
        check_finite_every_n_steps: int = 10,
        compile: bool = False,
        ema_decay: float | None = None,
        cuda_graphs: bool = False,
        run_config: dict | None = None,
    ):
        super().__init__(check_finite_every_n_steps, run_config)
        if d_steps_per_g_step < 1:
            raise ValueError(f"model.d_steps_per_g_step must be >= 1, got {d_steps_per_g_step}")
        if latent_distribution not in LATENT_DISTRIBUTIONS:
            raise ValueError(
                f"model.latent_distribution must be one of {LATENT_DISTRIBUTIONS}, got "
                f"{latent_distribution!r}"
            )
        self.generator = generator
        self.discriminator = discriminator
        self.optimizer_g_factory = optimizer_g
        self.optimizer_d_factory = optimizer_d
        self.d_steps_per_g_step = d_steps_per_g_step
        self.latent_distribution = latent_distribution
        self._last_generator_logs: dict = {}  # logged on batches without a G step too
        # what a step's losses may read besides (real, fake, labels): its latents "z" and the
        # noise ``sample_step_noise`` drew (set around the updates by both loops: ``step_context``)
        self.step_inputs: dict = {}
        # whether diagnostics only logged (never trained on) are computed in this step
        self.log_this_step = False
        self.compile_nets = bool(compile)  # opt-in: torch.compile G and D for training (see setup)
        if cuda_graphs and compile:
            raise ValueError("model.cuda_graphs and model.compile cannot both be true: choose one")
        # opt-in: each batch's updates replayed from a CUDA graph (src/models/cuda_graphs.py)
        self.cuda_graphs = bool(cuda_graphs)
        self._captured_steps: dict = {}  # (G step?, learning rates) -> CapturedStep
        # opt-in: an exponential moving average of G's weights, the G that samples (eval mode)
        self.ema_decay = ema_decay
        self.generator_ema: nn.Module | None = None
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
            # in the checkpoint: a resumed run continues the average and its warm-up exactly
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------- to be supplied by subclasses
    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """(D loss, detached values to log) for one real and one (detached) fake batch; ``labels``
        are the batch's class labels for class-conditional models, None otherwise."""
        raise NotImplementedError

    def generator_loss(
        self, fake: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """(G loss, detached values to log) for a fake batch that carries G's graph."""
        raise NotImplementedError

    def after_discriminator_step(self, logs: dict) -> dict:
        """State updated once per D step, from D's logged values (BEGAN's k_t, WGAN's clipping);
        returns further values to log. It must not branch on tensor values: a population runs it
        for all its members at once (torch.func.vmap)."""
        return {}

    def sample_step_noise(self, n: int, generator: torch.Generator | None = None, device=None):
        """The random draws a step's losses need besides the latents, for a batch of ``n``
        ({name: tensor}, in ``step_inputs``): drawn outside the losses so that a population can
        give each member the draws of its own stream (WGAN-GP's interpolation weights)."""
        return {}

    def epoch_end_update(self) -> dict:
        """State updated once per epoch from buffers (BEGAN's learning-rate decay); returns
        values to log as ``train/<name>`` and, as ``lr_scale``, a factor for both learning
        rates (applied through ``scaled_lr``). Branch-free, as ``after_discriminator_step``."""
        return {}

    def scaled_lr(self, lr: float, scale: float) -> float:
        return lr * scale

    def prepare_fit(self, datamodule) -> None:
        """State computed from the training data before the first step (the cluster GAN's
        clusters); called by ``setup`` and by a population for each member."""

    @contextmanager
    def step_context(self, **inputs):
        """``step_inputs`` for the losses called in the block."""
        previous, self.step_inputs = self.step_inputs, inputs
        try:
            yield
        finally:
            self.step_inputs = previous

    # ----------------------------------------------------------------- the loop
    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        shape, device = (n, self.latent_dim), self.device if device is None else device
        if self.latent_distribution == "uniform":  # BEGAN: z ~ U[-1, 1]^Nz
            return torch.rand(shape, device=device, generator=generator).mul_(2).sub_(1)
        return torch.randn(shape, device=device, generator=generator)

    @property
    def sampling_generator(self) -> nn.Module:
        """The G that samples: the EMA copy when ``ema_decay`` is set, else the trained G."""
        return self.generator if self.generator_ema is None else self.generator_ema

    @torch.no_grad()
    def update_generator_ema(self) -> None:
        """After each G step: ema <- d ema + (1 - d) G for weights and batch-norm statistics, with
        d = min(ema_decay, (1 + t) / (10 + t)) at the t-th update (the warm-up of TensorFlow's
        ExponentialMovingAverage ``num_updates``: early averages do not keep the random init)."""
        if self.generator_ema is None:
            return
        self.ema_updates += 1
        t = self.ema_updates.float()
        weight = 1.0 - torch.clamp((1.0 + t) / (10.0 + t), max=self.ema_decay)
        live = self.generator.state_dict()
        for name, average in self.generator_ema.state_dict().items():
            if average.is_floating_point():
                average.lerp_(live[name].detach(), weight.to(average.dtype))
            else:  # num_batches_tracked
                average.copy_(live[name])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z), or G(z, y) if class-conditional (``labels``: indices or [N, C] label vectors).

        In eval mode (sampling, scoring, the scripts) this is the EMA copy of G when the model
        keeps one; in training mode always the trained G."""
        generator = self.generator if self.training else self.sampling_generator
        if self.num_classes:
            if labels is None:
                raise ValueError(
                    f"{type(self).__name__} is class-conditional: pass labels "
                    f"(0..{self.num_classes - 1})"
                )
            return generator(z, labels)
        if labels is not None:
            raise ValueError(
                f"{type(self).__name__} is not class-conditional; labels cannot be given"
            )
        return generator(z)

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """D(x), or D(x, y) for a class-conditional model."""
        return self.discriminator(images) if labels is None else self.discriminator(images, labels)

    def batch_labels(self, batch) -> torch.Tensor | None:
        """The labels that condition this batch: the real images', or None when unconditional."""
        return batch[1] if self.num_classes else None

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.cuda_graphs and self._trainer is not None:
            precision = str(self.trainer.precision)
            if self.trainer.world_size > 1 or precision not in ("32", "32-true"):
                raise ValueError(
                    "model.cuda_graphs=true needs one process and 32-bit precision, got world size "
                    f"{self.trainer.world_size}, trainer.precision={precision}"
                )
        if stage == "fit" and self._trainer is not None and self.trainer.datamodule is not None:
            self.prepare_fit(self.trainer.datamodule)
        # nn.Module.compile compiles in place: parameter names, checkpoints, optimisers unchanged
        if stage == "fit" and self.compile_nets:
            self.generator.compile()
            self.discriminator.compile()

    def on_train_epoch_end(self) -> None:
        values = self.epoch_end_update()
        scale = values.pop("lr_scale", None)
        if scale is not None and float(scale) != 1.0:
            for optimizer in self.optimizers():
                for group in optimizer.param_groups:
                    group["lr"] = self.scaled_lr(group["lr"], float(scale))
        for name, value in values.items():
            self.log(f"train/{name}", value)

    def on_fit_start(self) -> None:
        # a graph steps the optimizers it was captured with: a new fit has new ones
        self._captured_steps = {}

    def configure_optimizers(self):
        return [
            self.optimizer_g_factory(self.generator.parameters()),
            self.optimizer_d_factory(self.discriminator.parameters()),
        ]

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch[0], self.batch_labels(batch)
        optimizer_g, optimizer_d = self.optimizers()
        self.train_batches_seen += 1
        check = self._check_now(batch_idx)
        # the batch index, not a process counter: a resumed epoch keeps the same G-step batches
        generator_steps = (batch_idx + 1) % self.d_steps_per_g_step == 0
        z = self.sample_latent(real.shape[0])
        noise = self.sample_step_noise(real.shape[0], device=real.device)
        self.log_this_step = self._is_log_step()

        if self.cuda_graphs:
            logs_d, logs_g = self._graphed_updates(real, labels, z, noise, generator_steps, check)
        else:

            def update(optimizer, loss, name):  # refuses a non-finite loss before its step
                self._update(optimizer, loss, name, check)

            _, logs_d, logs_g = self._adversarial_updates(
                real, labels, z, noise, generator_steps, optimizer_d, optimizer_g, update
            )
        if generator_steps:
            self._last_generator_logs = logs_g

        if self._is_log_step():
            self._log_train(
                {
                    # clones: a graph's outputs are overwritten by its next replay
                    **_snapshot(logs_d),
                    **_snapshot(self._last_generator_logs),
                    "lr_g": optimizer_g.param_groups[0]["lr"],
                    "lr_d": optimizer_d.param_groups[0]["lr"],
                }
            )

    def _adversarial_updates(
        self, real, labels, z, noise, generator_steps, optimizer_d, optimizer_g, update
    ):
        """One batch: D's update on the real batch and G(z) detached, then (``generator_steps``)
        G's update with D frozen and the EMA's. ``update(optimizer, loss, name)`` performs
        zero_grad -> backward -> step. Returns ({loss name: detached loss}, D's logs, G's logs).
        A population (src/population/step.py) runs the same methods in the same order."""
        # G's graph is kept only when the G step will use it
        with torch.set_grad_enabled(generator_steps):
            fake = self(z, labels)
        with self.step_context(z=z, **noise):
            # detached: no grads reach G
            loss_d, logs_d = self.discriminator_loss(real, fake.detach(), labels)
            update(optimizer_d, loss_d, "discriminator loss")
            logs_d.update(self.after_discriminator_step(logs_d))
            losses, logs_g = {"discriminator loss": loss_d.detach()}, {}
            if generator_steps:
                with frozen(self.discriminator):  # D gets no grads in G's step
                    loss_g, logs_g = self.generator_loss(fake, labels)
                    update(optimizer_g, loss_g, "generator loss")
                self.update_generator_ema()
                losses["generator loss"] = loss_g.detach()
        return losses, logs_d, logs_g

    def _graphed_updates(self, real, labels, z, noise, generator_steps, check):
        """The batch's updates through a CUDA graph (captured per kind of batch and learning
        rates). Inside the graph the plain torch optimizers step, so Lightning's per-step hooks do
        not run there and its optimizer-step count is advanced here. A NaN/inf is found after its
        step (a graph cannot stop midway): the run stops all the same, and no checkpoint of the
        broken weights is written."""
        optimizer_g, optimizer_d = (o.optimizer for o in self.optimizers())
        key = (generator_steps, learning_rates(optimizer_g, optimizer_d))
        step = self._captured_steps.get(key)
        if step is None:
            capture = real.is_cuda  # elsewhere the same updates run uncaptured
            if capture:
                make_capturable(optimizer_g), make_capturable(optimizer_d)
            # an older graph of this kind of batch baked in old learning rates: freed
            self._captured_steps = {k: v for k, v in self._captured_steps.items() if k[1] == key[1]}

            def raw_update(optimizer, loss, name):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            names = sorted(noise)

            def updates(real, labels, z, *drawn):
                return self._adversarial_updates(
                    real,
                    labels,
                    z,
                    dict(zip(names, drawn, strict=True)),
                    generator_steps,
                    optimizer_d,
                    optimizer_g,
                    raw_update,
                )

            step = CapturedStep(updates, capture=capture)
            self._captured_steps[key] = step
        losses, logs_d, logs_g = step(real, labels, z, *(noise[n] for n in sorted(noise)))
        self._count_optimizer_steps(len(losses))  # taken, whatever the check below finds
        if check:
            self._raise_first_not_finite(losses)
        return logs_d, logs_g

    def _raise_first_not_finite(self, losses: dict) -> None:
        """One host read for all the batch's losses; the first non-finite one is named."""
        finite = torch.isfinite(torch.stack(list(losses.values()))).tolist()
        for (name, loss), ok in zip(losses.items(), finite, strict=True):
            if not ok:
                self._raise_if_not_finite(loss, name)

    def _count_optimizer_steps(self, steps: int) -> None:
        """Advance Lightning's optimizer-step count (``global_step``: logging steps, max_steps,
        checkpoints) by the steps a graph took without Lightning's optimizer wrappers."""
        if self._trainer is None:
            return
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for _ in range(steps):
            progress.increment_ready()
            progress.increment_completed()

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx: int) -> None:
        real, labels = batch[0], self.batch_labels(batch)
        # latents seeded per batch: every epoch is validated on the same z, and validation never
        # draws from the training RNG (how often it runs must not change the trained weights)
        seeded = torch.Generator(device=self.device).manual_seed(VALIDATION_SEED + batch_idx)
        # G in eval mode, as when sampling
        z = self.sample_latent(real.shape[0], generator=seeded)
        fake = self(z, labels)
        # D as it is trained: real and fake normalised apart
        with batch_statistics(self.discriminator), self.step_context(z=z):
            logs = self.validation_values(real, fake, labels)
        self._log_validation(logs, real.shape[0])

    def validation_values(
        self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict:
        """Held-out diagnostics (no updates): by default D's loss and its parts on unseen data."""
        loss_d, logs = self.discriminator_loss(real, fake, labels)
        return logs


def _snapshot(logs: dict) -> dict:
    """Tensors cloned: a CUDA graph's outputs are overwritten by its next replay."""
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in logs.items()}


def shares_adversarial_step(model_cls: type) -> bool:
    """Whether ``model_cls`` trains with the shared D/G step (captured as CUDA graphs, stacked in
    populations) rather than a training step of its own."""
    return getattr(model_cls, "training_step", None) is AdversarialModel.training_step
