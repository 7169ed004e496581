from __future__ import annotations

from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from src.utils.files import atomic_path

ORDER = ("data", "model", "loss", "arch", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Print the resolved config as a rich tree, a branch per group; save the same text too."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with atomic_path(save_to) as tmp, open(tmp, "w") as handle:
            rich.print(tree, file=handle)
