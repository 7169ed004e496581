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

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from src.config import check_paths, validate_config
from src.metrics.scores import GenerativeScores, loggable_scores
from src.metrics.sharpness import blank_share
from src.population.member_logs import MemberLogs, validation_values
from src.population.step import Population
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


def train_population(members: list[Member]) -> list[dict]:
    """Train the members together; write and return each one's metrics.json content."""
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
        saved = _load_population(checkpoint_path, device)
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

        for epoch in range(first_epoch, max_epochs):
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
                if logs.is_log_step(batches_seen):
                    logs.snapshot(batches_seen, last_values)
            # read once an epoch: the steps themselves never wait for the device
            alive = population.active.tolist()
            seconds["training"] += time.perf_counter() - epoch_started
            epoch_started = time.perf_counter()
            alive = [k for k in range(size) if alive[k]]
            logs.flush_train(epoch, population.diverged_at.tolist())
            epochs_done[alive] += 1
            step = (epoch + 1) * per_epoch - 1  # where a single run logs its epoch's val values
            if val_batches is not None and (epoch + 1) % val_batches[1] == 0 and alive:
                values = validation_values(population, val_batches[0], device)
                for k in alive:
                    logs.log_val(k, values[k], epoch, step)
            # the model's epoch-end update (BEGAN's lr decay), before the checkpoints
            logs.log_epoch_end(population.end_epoch(), alive, epoch, step)
            _epoch_end(
                population,
                members,
                models,
                alive,
                epoch,
                max_epochs,
                callbacks,
                scores,
                logs,
                per_epoch,
                time.time() - started,
            )
            seconds["epoch_end"] += time.perf_counter() - epoch_started
            if epoch + 1 < max_epochs:
                logs.flush()  # the members' curves on disk reach the state saved next
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

        failures = {}
        for divergence in population.divergences:
            epoch = (divergence.batch - 1) // per_epoch
            failures[divergence.member] = {
                "message": f"non-finite {divergence.loss_name} at training batch "
                f"{divergence.batch} (epoch {epoch})",
                "loss": divergence.loss_name,
                "batch": divergence.batch,
                "epoch": epoch,
            }
        steps = (population.optimizer_d.steps + population.optimizer_g.steps).tolist()
        results = []
        wall = time.time() - started
        for k, member in enumerate(members):
            result = {
                "status": "diverged" if k in failures else "completed",
                "failure": failures.get(k),
                # the population's time, shared by its members
                "wall_time_s": round(wall / size, 3),
                "epochs_completed": int(epochs_done[k]),
                "optimizer_steps": int(steps[k]),
                "metrics": logs.metrics(k),
                **member.runtime,
                "population": {
                    "size": size,
                    "wall_time_s": round(wall, 3),
                    "device": str(device),
                    **{f"{name}_s": round(value, 3) for name, value in seconds.items()},
                    "training_batches": int(population.batches),
                },
            }
            write_json_atomic(member.output_dir / "metrics.json", result)
            member.result = result
            results.append(result)
        logs.close([r["status"] for r in results])
        checkpoint_path.unlink(missing_ok=True)  # every member's results are written
        checksum_path(checkpoint_path).unlink(missing_ok=True)
        done = size - len(failures)
        log.info("population done in %.1f s: %d completed, %d diverged", wall, done, len(failures))
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
    members,
    models,
    alive,
    epoch,
    max_epochs,
    callbacks,
    scores,
    logs: MemberLogs,
    batches_per_epoch,
    elapsed: float,
):
    """Sample grids, scores and last.ckpt of the members still alive, as the callbacks would."""
    step = (epoch + 1) * batches_per_epoch - 1
    grid_cfg = callbacks.get("sample_grid")
    template = population.model
    if grid_cfg and (epoch + 1) % grid_cfg.every_n_epochs == 0:
        # as src/callbacks/sample_grid.py draws them
        n, columns = grid_layout(template, grid_cfg.n_samples)
        z = template.sample_latent(
            n, generator=torch.Generator().manual_seed(grid_cfg.get("seed", 0)), device="cpu"
        )
        images = population.generate(z, requested_labels(template, n)).cpu()
        for k in alive:
            folder = members[k].output_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            grid = image_grid(images[k], columns)
            for name in (f"epoch_{epoch:03d}.png", "last.png"):
                with atomic_path(folder / name) as tmp:
                    save_image(grid, tmp, format="png")
            logs.log_image(k, folder / f"epoch_{epoch:03d}.png", step)
    metrics_cfg = callbacks.get("generative_metrics")
    due = metrics_cfg and ((epoch + 1) % metrics_cfg.every_n_epochs == 0 or epoch + 1 == max_epochs)
    if scores is not None and due and alive:
        started = time.perf_counter()
        n = metrics_cfg.n_samples
        # the latents a single run scores (src.sampling.generate)
        z = seeded_latents(template, n, metrics_cfg.get("seed", 0))
        requested = requested_labels(template, n)
        images = population.generate(z, requested)[alive]
        # the classifier sees every member's samples in one pass; the scores are per member
        features, predicted = scores.features(images.flatten(0, 1))
        features = features.view(len(alive), n, -1)
        predicted = predicted.view(len(alive), n)
        member_values = {}
        with torch.random.fork_rng(devices=[]):
            for position, k in enumerate(alive):
                result = scores.score_features(features[position], predicted[position], requested)
                result["blank_share"] = blank_share(images[position])
                member_values[k] = loggable_scores(result)
        seconds = (time.perf_counter() - started) / len(alive)
        for k in alive:
            # the population's wall time so far, as a single run's is since its fit started
            timing = {"metrics_seconds": seconds, "elapsed_seconds": elapsed + seconds * len(alive)}
            logs.log_val(k, {**member_values[k], **timing}, epoch, step)
    if callbacks.get("model_checkpoint"):
        for k in alive:
            _save_member(population, k, models[k], members[k], epoch, batches_per_epoch)


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


def train_population_or_record_failure(members: list[Member], threads: int | None = None) -> list:
    """``train_population``, but a crash is recorded as status failed for every member (and the
    sweep goes on), Ctrl-C or SIGTERM as ``interrupted`` (then re-raised: the sweep stops, as a
    single run's does); also the entry point of the launcher's worker processes."""
    if threads:
        torch.set_num_threads(threads)
    try:
        with sigterm_as_interrupt():
            return train_population(members)
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
