"""A run's loggers (``cfg.logger``), and a CSV logger whose curves survive a resume."""

from __future__ import annotations

import csv
import io
import math
import os

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig

from src.utils.files import write_text_atomic


def _step_of(row: dict) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan


def read_complete_rows(path: str) -> list[dict]:
    """The rows of a CSV log whose line was written whole: a write cut off by a kill leaves a last
    line without its newline, which is dropped rather than read with a truncated value."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as handle:
        text = handle.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [row for row in csv.DictReader(io.StringIO(text)) if not math.isnan(_step_of(row))]


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that rows already in ``metrics.csv`` are kept (Lightning
    deletes the file): those before the first step this process logs, i.e. everything up to the
    checkpoint a resumed fit continues from. Rows of the part of a run that was lost (after its
    last checkpoint) are at later steps and are replaced by the resumed fit's own."""

    def _check_log_dir_exists(self) -> None:
        self._previous: list[dict] | None = read_complete_rows(self.metrics_file_path)

    def log_metrics(self, metrics_dict: dict, step: int | None = None) -> None:
        if self._previous is not None:
            first_step = len(self.metrics) if step is None else step
            self._keep([r for r in self._previous if _step_of(r) < first_step])
            self._previous = None
        super().log_metrics(metrics_dict, step)

    def _keep(self, rows: list[dict]) -> None:
        self.metrics_keys = sorted({key for row in rows for key in row})
        if not rows:
            if os.path.isfile(self.metrics_file_path):
                os.remove(self.metrics_file_path)
            return
        self._write_all(rows, self.metrics_keys)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        # Lightning's rewrites in place; a kill in the middle would lose the whole curve
        self._write_all(read_complete_rows(self.metrics_file_path), fieldnames)

    def _write_all(self, rows: list[dict], fieldnames: list[str]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_file_path, buffer.getvalue())


class ResumableCSVLogger(CSVLogger):
    """``logger=csv``: Lightning's CSVLogger whose ``metrics.csv`` keeps the rows of the epochs a
    resumed run (or a relaunched population member) already finished."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


def _run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    """The run's tags plus what dashboards filter by: model, arch, dataset."""
    model = choices.get("model") or cfg.model._target_.rsplit(".", 1)[-1].lower()
    arch = (
        choices.get("arch")
        or cfg.arch.generator._target_.rsplit(".", 1)[-1].replace("Generator", "").lower()
    )
    data = cfg.data.get("dataset") or cfg.data.get("task")  # a translation task has no dataset
    return list(dict.fromkeys([*cfg.get("tags", []), model, arch, data]))


def build_loggers(cfg: DictConfig, choices: dict, concurrent: bool = False) -> list:
    """The run's loggers (``cfg.logger``), tagged with its model, arch and dataset. ``concurrent``:
    several runs log from this process at once (a population's members), each W&B logger then
    opens a run of its own instead of joining the process's current one."""
    tags = _run_tags(cfg, choices)
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if not logger_cfg:
            continue
        extra = {"tags": tags} if "tags" in logger_cfg else {}
        if concurrent and str(logger_cfg.get("_target_", "")).endswith("WandbLogger"):
            extra["reinit"] = "create_new"
        loggers.append(instantiate(logger_cfg, **extra))
    return loggers
