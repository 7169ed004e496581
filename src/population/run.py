"""Train a group of same-shape sweep jobs as one population and write every member's results where
and as a single run (src/runs/training.py) writes them: metrics.json (same keys and statuses),
samples/epoch_XXX.png + last.png, checkpoints/last.ckpt (its model's state_dict and run config,
which evaluate.py, sample.py and interpolate.py read).

Each member is built exactly as a single run builds it (its seed, then its model), sees the batches
a single run with its data settings sees (the training order depends on data.split_seed and the
epoch only), and draws its latents from its own generator seeded with its seed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from src.config import check_paths, validate_config
from src.metrics.scores import GenerativeScores, loggable_scores
from src.metrics.sharpness import blank_share
from src.population.member_logs import MemberLogs, validation_values
from src.population.step import LOSS_NAMES, Population
from src.runs.checkpoints import lightning_resume_state, save_checkpoint_file
from src.runs.training import batches_per_epoch, check_training_batches
from src.sampling import grid_layout, image_grid, requested_labels, seeded_latents
from src.utils import write_json_atomic
from src.utils.errors import UserError
from src.utils.files import (
    DamagedFileError,
    atomic_path,
    checksum_path,
    load_torch_checked,
    save_torch_checked,
    set_aside,
)
from src.utils.signals import sigterm_as_interrupt

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One sweep job: its resolved config, its run folder and its Hydra overrides / choices."""

    cfg: DictConfig
    output_dir: Path
    runtime: dict = field(default_factory=lambda: {"overrides": [], "choices": {}})
    result: dict | None = None


def _build_member(cfg: DictConfig):
    """What src/runs/training.py does before fit: check, seed, build the model (same init)."""
    validate_config(cfg)
    check_paths(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    return instantiate(cfg.model, _partial_=True)(run_config=run_config)


def population_device(cfg: DictConfig) -> torch.device:
    """Where a population trains: trainer.accelerator's choice (auto: a GPU if there is one)."""
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


#: latents are drawn for this many training batches at a time (one call per member, not per step)
LATENT_CHUNK = 64


class LatentStream:
    """Each member's latents (and the step noise its model draws: ``sample_step_noise``) from its
    own generator (seeded with its seed), drawn ``steps`` batches at a time ([S, K, B, d]), handed
    out one batch at a time: (z [K, B, d], {name: [K, B, ...]}). Its state (the generators' states
    where the current chunk began, and the position in it) resumes exactly."""

    def __init__(self, models, seeds, batch_size: int, steps: int, device):
        self.models = models
        self.seeds = list(seeds)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.batch_size = batch_size
        self.steps = steps
        self.device = device
        self.chunk: torch.Tensor | None = None
        self.position = 0
        self.chunk_start = [g.get_state() for g in self.generators]

    def _draw(self) -> None:
        self.chunk_start = [g.get_state() for g in self.generators]
        n = self.steps * self.batch_size
        latents, noises = [], []
        for model, g in zip(self.models, self.generators, strict=True):
            latents.append(model.sample_latent(n, generator=g, device=self.device))
            noises.append(model.sample_step_noise(n, generator=g, device=self.device))
        self.chunk = torch.stack(latents).view(len(latents), self.steps, self.batch_size, -1)
        self.chunk = self.chunk.transpose(0, 1)
        self.noise_chunk = {
            name: torch.stack([noise[name] for noise in noises])
            .view(len(noises), self.steps, self.batch_size, *noises[0][name].shape[1:])
            .transpose(0, 1)
            for name in noises[0]
        }
        self.position = 0

    def next(self) -> tuple[torch.Tensor, dict]:
        if self.chunk is None or self.position == self.steps:
            self._draw()
        z = self.chunk[self.position]
        noise = {name: chunk[self.position] for name, chunk in self.noise_chunk.items()}
        self.position += 1
        return z, noise

    def replace(self, k: int, model, seed: int) -> None:
        """Slot k's new member: its own generator seeded with its seed, and its part of the
        current chunk drawn from it (the other members' draws stay as they are)."""
        self.models[k] = model
        self.seeds[k] = int(seed)
        generator = self.generators[k] = torch.Generator(device=self.device).manual_seed(int(seed))
        self.chunk_start[k] = generator.get_state()
        if self.chunk is None:
            return
        n = self.steps * self.batch_size
        latent = model.sample_latent(n, generator=generator, device=self.device)
        noise = model.sample_step_noise(n, generator=generator, device=self.device)
        self.chunk[:, k] = latent.view(self.steps, self.batch_size, -1)
        for name, chunk in self.noise_chunk.items():
            chunk[:, k] = noise[name].view(self.steps, self.batch_size, *chunk.shape[3:])

    def state_dict(self) -> dict:
        return {
            "chunk_start": self.chunk_start,
            "position": self.position,
            "drawn": self.chunk is not None,
        }

    def load_state_dict(self, state: dict) -> None:
        for g, saved in zip(self.generators, state["chunk_start"], strict=True):
            g.set_state(saved.cpu())
        if state["drawn"]:  # draw the same chunk again, then skip what was used of it
            self._draw()
            self.position = state["position"]


def population_checkpoint_path(members: list[Member]) -> Path:
    """Where a population keeps its state between epochs: beside its members' run folders,
    named by them (a relaunch regroups the same unfinished jobs into the same population)."""
    names = "\n".join(sorted(str(m.output_dir) for m in members))
    digest = hashlib.sha1(names.encode()).hexdigest()[:16]
    return Path(members[0].output_dir).parent / ".populations" / f"{digest}.pt"


class Refill(Protocol):
    """What a search plugs into a population (hydra_plugins/ebgan_lab_population/optuna_sweeper.py):
    it hears each member's scores and may prune it; a member's slot, once its member ended
    (finished, pruned, diverged), goes to the next member it hands out."""

    def report(self, member: Member, epoch: int, metrics: dict) -> bool:
        """Member's scores after its own epoch ``epoch`` (0-based); True: prune it now."""

    def ended(self, member: Member, result: dict) -> None:
        """Member's result (also in its metrics.json): completed, pruned, diverged."""

    def next_member(self) -> Member | None:
        """The member to take a freed slot, or None (no more)."""

    def misfit(self, member: Member, reason: str) -> None:
        """``member`` (from ``next_member``) cannot join this population (``reason``)."""


def train_population(members: list[Member], refill: Refill | None = None) -> list[dict]:
    """Train the members together; write and return each one's metrics.json content (in the
    order given; with ``refill``, the members it handed out follow, in the order they ended)."""
    started = time.time()
    cfgs = [m.cfg for m in members]
    first = cfgs[0]
    if first.get("torch_threads"):
        torch.set_num_threads(int(first.torch_threads))
    torch.set_float32_matmul_precision(str(first.get("matmul_precision") or "highest"))
    device = population_device(first)
    models = [_build_member(cfg) for cfg in cfgs]
    datamodule = instantiate(first.data)
    datamodule.prepare_data()
    check_training_batches(first, datamodule)  # none: an error naming the key, not "completed"
    for model in models:  # what a single run's setup computes from the data (clusters)
        model.prepare_fit(datamodule)
    population = Population(
        models, device, cuda_graphs=bool(OmegaConf.select(first, "model.cuda_graphs"))
    )
    size = len(members)
    target = first.model._target_
    log.info("population of %d %s members (%s) on %s", size, population.kind, target, device)

    epoch_box = [0]
    # the training split lives on the device; a single run's batch order, epoch by epoch
    loader = datamodule.train_batches(lambda: epoch_box[0], device=device)
    per_epoch = batches_per_epoch(first.trainer.limit_train_batches, len(loader))
    latents = LatentStream(
        models,
        [cfg.seed for cfg in cfgs],
        datamodule.batch_size,
        min(LATENT_CHUNK, per_epoch),
        device,
    )
    callbacks = first.get("callbacks") or {}
    with torch.random.fork_rng(devices=[]):  # building the classifier draws initial weights
        scores = _scorer(callbacks.get("generative_metrics"), datamodule, device)
    logs = MemberLogs(members, models, population, first.trainer.get("log_every_n_steps", 50))
    # slot k's member now (None: freed, no member to take it); when it joined: logs.first_epoch /
    # first_batch, and joined_at (wall clock)
    slots: list[Member | None] = list(members)
    ended: list[Member] = []
    try:  # a crash or an interrupt still closes every member's loggers (W&B: as failed)
        last_values: dict = {}  # the newest per-member values ([K] tensors): D's, and the last G's
        val_batches = _validation_batches(first.trainer, datamodule)
        epochs_done = torch.zeros(size, dtype=torch.long)
        max_epochs = int(first.trainer.max_epochs)
        # where the population's time goes (metrics.json "population"): building, training,
        # epoch ends
        seconds = {"setup": time.time() - started, "training": 0.0, "epoch_end": 0.0}
        checkpoint_path = population_checkpoint_path(members)
        first_epoch = 0
        # a search's population changes members: its study, not a population state, resumes it
        saved = None if refill is not None else _load_population(checkpoint_path, device)
        if saved is not None:  # an interrupted population: on from its last finished epoch
            try:
                population.load_state_dict(saved["population"])
                latents.load_state_dict(saved["latents"])
            except (KeyError, ValueError, RuntimeError) as err:  # another version's state
                set_aside(checkpoint_path, f"not a state of this population ({err!r})")
                population = Population(models, device, cuda_graphs=population.cuda_graphs)
                logs.population = population
                latents = LatentStream(
                    models, latents.seeds, latents.batch_size, latents.steps, device
                )
                saved = None
        if saved is not None:
            logs.load_state_dict(saved["logs"])
            seconds = saved["seconds"]
            epochs_done = saved["epochs_done"]
            torch.set_rng_state(saved["rng"].cpu())
            if device.type == "cuda" and saved["cuda_rng"] is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), device)
            started = time.time() - saved["elapsed"]
            first_epoch = saved["epoch"] + 1
            log.info("population resumed after epoch %d from %s", saved["epoch"], checkpoint_path)
        joined_at = [started] * size

        def result_of(k: int, status: str, **extra) -> dict:
            """Slot k's member's metrics.json, written (its loggers closed)."""
            member = slots[k]
            wall = time.time() - joined_at[k]
            steps = population.optimizer_d.steps[k] + population.optimizer_g.steps[k]
            result = {
                "status": status,
                "failure": extra.pop("failure", None),
                **extra,
                # the population's time while the member was in it, shared by its members
                "wall_time_s": round(wall / size, 3),
                "epochs_completed": int(epochs_done[k]),
                "optimizer_steps": int(steps),
                "metrics": logs.metrics(k),
                **member.runtime,
                "population": {
                    "size": size,
                    "wall_time_s": round(wall, 3),
                    "device": str(device),
                    **{f"{name}_s": round(value, 3) for name, value in seconds.items()},
                    "training_batches": int(population.batches) - logs.first_batch[k],
                },
            }
            write_json_atomic(member.output_dir / "metrics.json", result)
            member.result = result
            logs.close_member(k, status)
            ended.append(member)
            return result

        def divergence_of(k: int) -> dict | None:
            at = int(population.diverged_at[k])
            if not at:
                return None
            batch = at - logs.first_batch[k]  # the member's own training batch
            epoch = (batch - 1) // per_epoch
            loss = LOSS_NAMES[int(population.diverged_loss[k])]
            return {
                "message": f"non-finite {loss} at training batch {batch} (epoch {epoch})",
                "loss": loss,
                "batch": batch,
                "epoch": epoch,
            }

        def fill(k: int, epoch: int) -> None:
            """Slot k to the next member the search hands out that fits; freed if none does."""
            slots[k] = None
            population.free(k)
            while (member := refill.next_member()) is not None:
                # a member's build seeds the global RNG: the others' dropout draws go on as before
                with torch.random.fork_rng(devices=[]):
                    try:
                        model = _build_member(member.cfg)
                        model.prepare_fit(datamodule)
                        reason = population.misfit(k, model)
                    except (ValueError, UserError) as err:
                        reason = str(err)
                if reason:
                    refill.misfit(member, reason)
                    continue
                population.replace_member(k, model)
                latents.replace(k, model, member.cfg.seed)
                batches = epoch * per_epoch
                logs.replace(k, member, model, epoch, batches)
                slots[k] = member
                joined_at[k] = time.time()
                epochs_done[k] = 0
                log.info("slot %d: %s joins at epoch %d", k, member.output_dir.name, epoch)
                return

        epoch = first_epoch
        while any(slot is not None for slot in slots):
            epoch_started = time.perf_counter()
            epoch_box[0] = epoch
            for batch_idx, batch in enumerate(loader):
                if batch_idx >= per_epoch:
                    break
                z, noise = latents.next()
                labels = population.model.batch_labels(batch)  # shared: the real batch's
                steps = population.generator_steps(batch_idx)
                last_values.update(population.train_batch(batch[0], z, steps, labels, noise))
                batches_seen = epoch * per_epoch + batch_idx + 1
                if logs.wants_snapshot(batches_seen):
                    logs.snapshot(batches_seen, last_values)
            # read once an epoch: the steps themselves never wait for the device
            active = population.active.tolist()
            seconds["training"] += time.perf_counter() - epoch_started
            epoch_started = time.perf_counter()
            alive = [k for k in range(size) if active[k] and slots[k] is not None]
            logs.flush_train(epoch, population.diverged_at.tolist())
            epochs_done[alive] += 1
            step = (epoch + 1) * per_epoch - 1  # where a single run logs its epoch's val values
            # each member's own epoch: a member that joined later counts from where it joined
            own = {k: epoch - logs.first_epoch[k] for k in range(size)}
            if val_batches is not None and alive:
                due = [k for k in alive if (own[k] + 1) % val_batches[1] == 0]
                if due:
                    values = validation_values(population, val_batches[0], device)
                    for k in due:
                        logs.log_val(k, values[k], epoch, step)
            # the model's epoch-end update (BEGAN's lr decay), before the checkpoints
            logs.log_epoch_end(population.end_epoch(), alive, epoch, step)
            scored = _epoch_end(
                population,
                slots,
                alive,
                own,
                epoch,
                max_epochs,
                callbacks,
                scores,
                logs,
                per_epoch,
                time.time() - started,
            )
            seconds["epoch_end"] += time.perf_counter() - epoch_started
            logs.flush()  # the members' curves on disk reach the state saved next
            if refill is None:
                if epoch + 1 == max_epochs:
                    break
                _save_population(
                    checkpoint_path,
                    {
                        "members": [str(m.output_dir) for m in members],
                        "epoch": epoch,
                        "population": population.state_dict(),
                        "latents": latents.state_dict(),
                        "logs": logs.state_dict(),
                        "epochs_done": epochs_done,
                        "seconds": seconds,
                        "elapsed": time.time() - started,
                        "rng": torch.get_rng_state(),
                        "cuda_rng": (
                            torch.cuda.get_rng_state(device) if device.type == "cuda" else None
                        ),
                    },
                )
            else:  # members end as they finish, are pruned or diverge; the search refills
                for k in range(size):
                    if slots[k] is None:
                        continue
                    failure = divergence_of(k)
                    if failure is not None:
                        refill.ended(slots[k], result_of(k, "diverged", failure=failure))
                    elif own[k] + 1 >= max_epochs:
                        refill.ended(slots[k], result_of(k, "completed"))
                    elif k in scored and refill.report(slots[k], own[k], logs.metrics(k)):
                        steps = population.optimizer_d.steps[k] + population.optimizer_g.steps[k]
                        pruned = {"after_epochs": own[k] + 1, "optimizer_steps": int(steps)}
                        refill.ended(slots[k], result_of(k, "pruned", pruned=pruned))
                    else:
                        continue
                    fill(k, epoch + 1)
            epoch += 1

        if refill is None:  # the members end together
            for k in range(size):
                failure = divergence_of(k)
                result_of(k, "diverged" if failure else "completed", failure=failure)
        checkpoint_path.unlink(missing_ok=True)  # every member's results are written
        checksum_path(checkpoint_path).unlink(missing_ok=True)
        given = {id(m) for m in members}
        results = [m.result for m in members] + [m.result for m in ended if id(m) not in given]
        statuses = [r["status"] for r in results]
        counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
        log.info("population done in %.1f s: %s", time.time() - started, counts)
        return results
    except BaseException:
        logs.close(["failed"] * size)
        raise


def _validation_batches(trainer_cfg, datamodule):
    """(the val batches a single run validates on, every how many epochs), or None: Lightning's
    ``limit_val_batches`` (a share or a count; 0 = none) and ``check_val_every_n_epoch``."""
    limit = trainer_cfg.get("limit_val_batches", 1.0)
    every = trainer_cfg.get("check_val_every_n_epoch", 1)
    if not limit or not every:
        return None
    loader = datamodule.val_dataloader()
    count = batches_per_epoch(limit, len(loader))
    return list(itertools.islice(loader, count)), int(every)


def _scorer(metrics_cfg, datamodule, device):
    if not metrics_cfg:
        return None
    real = datamodule.splits["test"][0][: metrics_cfg.n_real]
    return GenerativeScores(
        metrics_cfg.dataset,
        real,
        device=device,
        kid_subsets=metrics_cfg.kid_subsets,
        kid_subset_size=metrics_cfg.kid_subset_size,
        seed=metrics_cfg.get("seed", 0),
        nearest_k=metrics_cfg.get("nearest_k", 5),
    )


def _epoch_end(
    population,
    slots,
    alive,
    own,
    epoch,
    max_epochs,
    callbacks,
    scores,
    logs: MemberLogs,
    batches_per_epoch,
    elapsed: float,
) -> set[int]:
    """Sample grids, scores and last.ckpt of the members still alive, as the callbacks would, each
    at its own epoch ``own[k]``; returns the members scored."""
    step = (epoch + 1) * batches_per_epoch - 1

    def due(every: int) -> list[int]:
        return [k for k in alive if (own[k] + 1) % every == 0 or own[k] + 1 == max_epochs]

    grid_cfg = callbacks.get("sample_grid")
    template = population.model
    drawn = [k for k in alive if grid_cfg and (own[k] + 1) % grid_cfg.every_n_epochs == 0]
    if drawn:
        # as src/callbacks/sample_grid.py draws them
        n, columns = grid_layout(template, grid_cfg.n_samples)
        z = template.sample_latent(
            n, generator=torch.Generator().manual_seed(grid_cfg.get("seed", 0)), device="cpu"
        )
        images = population.generate(z, requested_labels(template, n)).cpu()
        for k in drawn:
            folder = slots[k].output_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            grid = image_grid(images[k], columns)
            for name in (f"epoch_{own[k]:03d}.png", "last.png"):
                with atomic_path(folder / name) as tmp:
                    save_image(grid, tmp, format="png")
            logs.log_image(k, folder / f"epoch_{own[k]:03d}.png", step - logs.first_batch[k])
    metrics_cfg = callbacks.get("generative_metrics")
    scored = due(metrics_cfg.every_n_epochs) if scores is not None and metrics_cfg else []
    if scored:
        started = time.perf_counter()
        n = metrics_cfg.n_samples
        # the latents a single run scores (src.sampling.generate)
        z = seeded_latents(template, n, metrics_cfg.get("seed", 0))
        requested = requested_labels(template, n)
        images = population.generate(z, requested)[scored]
        # the classifier sees every member's samples in one pass; the scores are per member
        features, predicted = scores.features(images.flatten(0, 1))
        features = features.view(len(scored), n, -1)
        predicted = predicted.view(len(scored), n)
        member_values = {}
        with torch.random.fork_rng(devices=[]):
            for position, k in enumerate(scored):
                result = scores.score_features(features[position], predicted[position], requested)
                result["blank_share"] = blank_share(images[position])
                member_values[k] = loggable_scores(result)
        seconds = (time.perf_counter() - started) / len(scored)
        for k in scored:
            # the population's wall time so far, as a single run's is since its fit started
            total = elapsed + seconds * len(scored)
            timing = {"metrics_seconds": seconds, "elapsed_seconds": total}
            logs.log_val(k, {**member_values[k], **timing}, epoch, step)
    if callbacks.get("model_checkpoint"):
        for k in alive:
            model = population.models[k]
            _save_member(population, k, model, slots[k], own[k], batches_per_epoch)
    return set(scored)


def _save_population(path: Path, state: dict) -> None:
    """The population's state after an epoch: atomic, with its checksum (src/utils/files.py)."""
    save_torch_checked(state, path)


def _load_population(path: Path, device: torch.device) -> dict | None:
    """The state an interrupted population saved after its last finished epoch, or None. A damaged
    file (its checksum fails, or torch cannot read it) is named, moved aside, and the population
    starts again from its first epoch: a relaunch completes instead of failing every time."""
    if not path.is_file():
        return None
    try:
        saved = load_torch_checked(path, map_location=device, weights_only=False)
        if not isinstance(saved, dict) or "population" not in saved:
            raise DamagedFileError(path, "not a population state (no 'population' key)")
        return saved
    except DamagedFileError as err:
        set_aside(path, err.reason)
        log.warning("population state %s unusable: training its members from the start", path)
        return None


def _save_member(
    population: Population, k: int, model, member: Member, epoch: int, batches_per_epoch: int
) -> None:
    """Member k as its own model's checkpoint: weights, batch-norm statistics, run config, and
    what Lightning resumes from (its optimizers' states as torch's own optimizers hold them, the
    loop counters), so ``ckpt_path=`` continues it as a single run."""
    pairs_g = population.stack.member_pairs(k, model, "generator")
    pairs_d = population.stack.member_pairs(k, model, "discriminator")
    population.stack.write_member(k, model)
    optimizer_g, optimizer_d = model.configure_optimizers()
    population.optimizer_g.export_member(k, pairs_g, optimizer_g)
    population.optimizer_d.export_member(k, pairs_d, optimizer_d)
    steps = int(population.optimizer_g.steps[k]) + int(population.optimizer_d.steps[k])
    folder = member.output_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        **lightning_resume_state(epoch + 1, batches_per_epoch, steps),
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer_g.state_dict(), optimizer_d.state_dict()],
        "run_config": model.run_config,
    }
    save_checkpoint_file(checkpoint, folder / "last.ckpt")


def _record(members: list[Member], status: str, message: str) -> list[dict]:
    """metrics.json of every member without results: a population that crashed (``failed``) or
    was stopped (``interrupted``: Ctrl-C, SIGTERM; a relaunch resumes it from its last epoch)."""
    results = []
    for member in members:
        result = {
            "status": status,
            "failure": {"message": message},
            "metrics": {},
            **member.runtime,
        }
        write_json_atomic(member.output_dir / "metrics.json", result)
        member.result = result
        results.append(result)
    return results


def train_population_or_record_failure(
    members: list[Member], threads: int | None = None, refill: Refill | None = None
) -> list:
    """``train_population``, but a crash is recorded as status failed for every member (and the
    sweep goes on), Ctrl-C or SIGTERM as ``interrupted`` (then re-raised: the sweep stops, as a
    single run's does); also the entry point of the launcher's worker processes."""
    if threads:
        torch.set_num_threads(threads)
    try:
        with sigterm_as_interrupt():
            return train_population(members, refill)
    except KeyboardInterrupt as err:
        log.warning("population interrupted (%s); a relaunch resumes it", err or "Ctrl-C")
        _record(members, "interrupted", f"KeyboardInterrupt: {err}")
        raise
    except UserError as err:  # bad input (a damaged file, no batch to train on): its own line
        log.error("population failed: %s", err)
        return _record(members, "failed", str(err))
    except Exception as err:
        log.exception("population failed")
        return _record(members, "failed", f"{type(err).__name__}: {err}")
