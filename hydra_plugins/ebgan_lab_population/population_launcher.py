"""``hydra/launcher=population``: the same sweep configs and multirun command, trained stacked.

Every job gets its folder and .hydra/ files from Hydra's own ``run_job``, as with the basic
launcher. Jobs that already completed there (sweep resume) and jobs a population cannot train
(``run_alone_reason``: the model's own ``population_refusal``, an EMA, DDP, another precision,
another optimizer) run through the normal task, one by one, each logged with its reason. The
others are grouped by everything but what members may set apart (seeds, optimizers, schedules,
the model's ``member_hparams``, the arch's ``pad_widths``) and trained ``max_members`` at a time
by src/population/run.py, which writes each member's results as a single run would.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

#: the parts of a job's config that must be equal for jobs to share one population; within
#: them, what members may set apart is left out by ``group_key`` (their seeds, optimizers,
#: schedules, the model's ``member_hparams``, the arch's ``pad_widths``)
SHAPE_KEYS = (
    "model",
    "arch",
    "data",
    "loss",
    "trainer.max_epochs",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
    "callbacks.generative_metrics",
    "callbacks.sample_grid.n_samples",
    "callbacks.sample_grid.every_n_epochs",
    "torch_threads",
    "matmul_precision",
)
#: model keys every member sets for itself (the nets come from ``arch``; the optimizers are
#: stepped per member; each member keeps its own D/G schedule)
MEMBER_MODEL_KEYS = (
    "generator",
    "discriminator",
    "optimizer_g",
    "optimizer_d",
    "d_steps_per_g_step",
)

#: trainer.precision values a population trains as they ask (float32)
FULL_PRECISION = ("32", "32-true")
#: the optimizers a population steps per member (src/population/optim.py)
STACKED_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.SGD", "torch.optim.RMSprop")


def model_class(cfg: DictConfig) -> type:
    from hydra.utils import get_class

    return get_class(str(cfg.model._target_))


def run_alone_reason(cfg: DictConfig) -> str | None:
    """Why src/population cannot train this job (it then runs as a single run), or None. From
    the model's own declaration (``population_refusal``) and what a population does not do."""
    refusal = getattr(model_class(cfg), "population_refusal", "no population support")
    if refusal:
        return f"model={cfg.model._target_.rsplit('.', 1)[-1]}: {refusal}"
    if OmegaConf.select(cfg, "model.ema_decay") is not None:
        return "model.ema_decay: an EMA of G is kept by single runs only"
    # a population is one process: a job asking for several devices runs on its own (DDP)
    if str(OmegaConf.select(cfg, "trainer.strategy") or "auto") != "auto":
        return "trainer.strategy: several processes (DDP) train one run"
    # a population steps in float32, uncompiled: other precisions and compiled models run alone
    if str(OmegaConf.select(cfg, "trainer.precision") or "32") not in FULL_PRECISION:
        return "trainer.precision: a population trains in float32"
    if OmegaConf.select(cfg, "model.compile"):
        return "model.compile: a population runs the nets uncompiled"
    for name in ("optimizer_g", "optimizer_d"):
        target = str(OmegaConf.select(cfg, f"model.{name}._target_") or "")
        if target not in STACKED_OPTIMIZERS:
            return f"model.{name}: a population steps {list(STACKED_OPTIMIZERS)}, not {target}"
    return None


def valid(cfg: DictConfig) -> bool:
    from src.config import validate_config

    try:
        validate_config(cfg)
    except Exception:
        return False
    return True


def _container(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def shape_values(cfg: DictConfig) -> dict:
    """SHAPE_KEYS' values of a job's (unresolved) config, its arch's ``pad_widths`` left out:
    resolved with those widths null, so the nets' copies of them are left out too."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in OmegaConf.select(cfg, "arch.pad_widths") or []:
            cfg.arch[key] = None
    return {key: _container(OmegaConf.select(cfg, key)) for key in SHAPE_KEYS}


def group_key(cfg: DictConfig, values: dict | None = None) -> str:
    """``shape_values`` (given, or of ``cfg``) without what members may set apart, as text:
    jobs with equal keys share a population."""
    values = copy.deepcopy(values if values is not None else shape_values(cfg))
    member_hparams = getattr(model_class(cfg), "member_hparams", ())
    for key in (*MEMBER_MODEL_KEYS, *member_hparams):
        values["model"].pop(key, None)
    return json.dumps(values, sort_keys=True, default=str)


#: layers that normalise over a net's width: zero-padding it would change what they compute
WIDTH_NORMALISERS = ("LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d")


@functools.lru_cache(maxsize=256)
def _net_info(net_json: str, samples_latents: bool) -> tuple[int, bool]:
    """(floating-point operations of one sample through the net built from this config: a
    generator's latent, or a discriminator's image; whether the net can be zero-padded to a
    wider member's width)."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    net_cfg = json.loads(net_json)
    with torch.random.fork_rng(devices=[]):
        net = instantiate(net_cfg).eval()
    paddable = not any(type(m).__name__ in WIDTH_NORMALISERS for m in net.modules())
    labels = torch.zeros(1, dtype=torch.long) if getattr(net, "num_classes", 0) else None
    inputs = (
        torch.zeros(1, net.latent_dim)
        if samples_latents
        else torch.zeros(1, *net_cfg["image_shape"]),
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs, *(() if labels is None else (labels,)))
    return counter.get_total_flops(), paddable


def _nets(cfg: DictConfig) -> list[tuple[int, bool]]:
    return [
        _net_info(json.dumps(_container(OmegaConf.select(cfg, node)), sort_keys=True), latents)
        for node, latents in (("model.generator", True), ("model.discriminator", False))
    ]


def member_cost(cfg: DictConfig) -> tuple[int, int]:
    """(G's, D's) floating-point operations a sample, forward, from the nets the job builds (its
    arch and data shape): what a member costs to train, up to a constant."""
    (g, _), (d, _) = _nets(cfg)
    return g, d


def paddable(cfg: DictConfig) -> bool:
    """Whether the job's nets can be zero-padded (no layer normalises over their width)."""
    return all(ok for _, ok in _nets(cfg))


def padded_cost(cfgs: list[DictConfig]) -> int:
    """The cost of one member zero-padded to the widest G and the widest D of ``cfgs``."""
    costs = [member_cost(c) for c in cfgs]
    return max(g for g, _ in costs) + max(d for _, d in costs)


def population_cost(chunk: list) -> float:
    """A population's training work, for scheduling: its members' padded work x its batches."""
    cfgs = [member.cfg for _, member, _ in chunk]
    epochs = int(cfgs[0].trainer.max_epochs)
    limit = cfgs[0].trainer.get("limit_train_batches", 1.0)
    # a count of batches, or a share of an epoch (whose size is not known here: ~1 000 batches)
    batches = limit if isinstance(limit, int) else 1000 * float(limit)
    return len(cfgs) * padded_cost(cfgs) * epochs * batches


def chunk_by_padding(jobs: list, cfg_of, max_members: int, max_padding: float) -> list[list]:
    """Split one shape group into populations of at most ``max_members``, costliest first,
    adding a job to the current population only while every member's padded cost (the widest
    G's and D's work) stays within ``max_padding`` x its own: zero-padding a 400-wide G to 3 200
    would cost 64x its own matmuls. The whole population then does at most ``max_padding`` x
    its members' own work. Jobs of equal widths never pad."""
    ordered = sorted(jobs, key=lambda j: sum(member_cost(cfg_of(j))), reverse=True)
    chunks: list[list] = []
    current: list = []
    for job in ordered:
        trial = [*current, job]
        cfgs = [cfg_of(j) for j in trial]
        cheapest = min(sum(member_cost(c)) for c in cfgs)
        fits = len(trial) <= max_members and padded_cost(cfgs) <= max_padding * cheapest
        if current and not fits:
            chunks.append(current)
            trial = [job]
        current = trial
    if current:
        chunks.append(current)
    return chunks


def _describe(cfg: DictConfig) -> dict:
    """The task run inside each job's folder first: what the population needs of the job."""
    from src.utils import hydra_runtime  # light: a compose worker never imports torch

    return {
        "cfg": OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)),
        "shape_values": shape_values(cfg),
        "output_dir": Path(HydraConfig.get().runtime.output_dir),
        "runtime": hydra_runtime(),
    }


def _compose_and_describe(hydra_context, config, overrides, idx, singleton_state=None):
    """One job's config (Hydra's composition with its overrides) and its folder, made by Hydra's
    own ``run_job`` with ``_describe`` as the task: (config, JobReturn). Also the entry point of the
    worker processes that do this for many jobs at once."""
    from hydra.core.singleton import Singleton

    if singleton_state is not None:  # in a worker process: Hydra's global state, as joblib's does
        setup_globals()
        Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = idx
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    described = run_job(
        hydra_context=hydra_context,
        task_function=_describe,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return sweep_config, described


class PopulationLauncher(Launcher):
    def __init__(
        self,
        max_members: int = 64,
        n_jobs: int = 1,
        max_padding: float = 2.0,
        compose_jobs: int | None = None,
    ) -> None:
        super().__init__()
        if max_members < 1 or n_jobs < 1 or max_padding < 1 or (compose_jobs or 1) < 1:
            raise ValueError(
                "hydra.launcher.max_members, n_jobs and compose_jobs must be >= 1 and max_padding "
                f">= 1.0, got {max_members}, {n_jobs}, {compose_jobs}, {max_padding}"
            )
        self.max_members = max_members
        self.max_padding = float(max_padding)
        self.n_jobs = n_jobs
        self.compose_jobs = compose_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _run(self, sweep_config: DictConfig, task_function) -> JobReturn:
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _described_jobs(self, job_overrides, initial_job_idx: int) -> list[tuple]:
        """(config, JobReturn of ``_describe``) of every job, in order. Composing a job's config
        costs ~0.2 s (Hydra parses its YAML files again for each): a large grid's jobs are
        composed ``compose_jobs`` at a time in worker processes (default: the cores, at most 16)."""
        import os

        workers = self.compose_jobs or min(16, os.cpu_count() or 1)
        jobs = [(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        for overrides, idx in jobs:
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        # a worker process costs a few seconds to start (imports): by default only for many jobs
        if workers == 1 or (self.compose_jobs is None and len(jobs) < 8 * workers):
            return [
                _compose_and_describe(self.hydra_context, self.config, overrides, idx)
                for overrides, idx in jobs
            ]
        from hydra.core.singleton import Singleton
        from joblib import Parallel, delayed

        # loky pickles with cloudpickle: Hydra's state holds OmegaConf's resolver closures (as in
        # hydra-joblib-launcher, which does the same for whole jobs)
        state = Singleton.get_state()
        described = Parallel(n_jobs=workers, backend="loky")(
            delayed(_compose_and_describe)(self.hydra_context, self.config, overrides, idx, state)
            for overrides, idx in jobs
        )
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)  # the workers' memory back before training
        return described

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from src.population.run import Member
        from src.runs.training import completed_before

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        count = len(job_overrides)
        log.info("Launching %d jobs as populations of at most %d", count, self.max_members)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        groups: dict[str, list[tuple[int, Member, JobReturn]]] = {}
        described_jobs = self._described_jobs(job_overrides, initial_job_idx)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for i, (sweep_config, described) in enumerate(described_jobs):
            if described.status != JobStatus.COMPLETED:
                returns[i] = described
                continue
            seen = described.return_value
            cfg = seen["cfg"]
            reason = run_alone_reason(cfg) if valid(cfg) else "invalid config (reported below)"
            if completed_before(seen["output_dir"], seen["runtime"]["overrides"]) is not None:
                reason = "completed before (skipped)"
            if reason is not None:
                log.info("job #%d runs alone: %s", initial_job_idx + i, reason)
                HydraConfig.instance().set_config(sweep_config)
                returns[i] = self._run(sweep_config, self.task_function)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                continue
            member = Member(cfg, seen["output_dir"], seen["runtime"])
            # jobs whose nets cannot be padded share populations with their own widths only
            key = group_key(cfg, seen["shape_values"] if paddable(cfg) else None)
            groups.setdefault(key, []).append((i, member, described))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        chunks = [
            chunk
            for jobs in groups.values()
            for chunk in chunk_by_padding(
                jobs, lambda job: job[1].cfg, self.max_members, self.max_padding
            )
        ]
        log.info("%d populations: sizes %s", len(chunks), [len(c) for c in chunks])
        try:
            trained = self._train(chunks)
        except KeyboardInterrupt as err:  # Ctrl-C / SIGTERM: the members say interrupted
            log.error(
                "interrupted (%s): the running members recorded status interrupted; the same "
                "command resumes them from their last finished epoch",
                err or "Ctrl-C",
            )
            raise SystemExit(130) from None
        for chunk, results in zip(chunks, trained, strict=True):
            for (i, member, described), result in zip(chunk, results, strict=True):
                member.result = result
                metric = member.cfg.get("optimized_metric")
                described.return_value = result["metrics"].get(metric) if metric else None
                returns[i] = described
        return returns

    def _train(self, chunks: list) -> list[list[dict]]:
        """Each chunk's results: here, or ``n_jobs`` populations at a time in worker processes
        (each with cores / n_jobs threads, unless torch_threads is set)."""
        from src.population.run import train_population_or_record_failure

        members = [[member for _, member, _ in chunk] for chunk in chunks]
        if self.n_jobs == 1 or len(chunks) == 1:
            return [train_population_or_record_failure(m) for m in members]
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // self.n_jobs)
        context = multiprocessing.get_context("spawn")
        # the costliest populations first: the workers then finish close together (longest
        # processing time first; the reduced EBGAN grid's 4 populations: 12 s apart -> ~1 s)
        order = sorted(range(len(chunks)), key=lambda i: -population_cost(chunks[i]))
        from src.utils.signals import sigterm_as_interrupt

        with sigterm_as_interrupt(), ProcessPoolExecutor(self.n_jobs, mp_context=context) as pool:
            futures = {
                i: pool.submit(train_population_or_record_failure, members[i], threads)
                for i in order
            }
            try:
                return [futures[i].result() for i in range(len(chunks))]
            except KeyboardInterrupt:
                # SIGTERM to the workers: each records its members interrupted, then exits
                for process in list(pool._processes.values()):
                    process.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
