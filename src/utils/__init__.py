"""Glue shared by the entry points: the config resolvers, checks and the run-result writer."""

from src.utils.config import (
    PROJECT_ROOT,
    ConfigError,
    check_paths,
    hydra_runtime,
    is_multirun,
    register_resolvers,
    validate_config,
)
from src.utils.files import write_json_atomic

__all__ = [
    "PROJECT_ROOT",
    "ConfigError",
    "check_paths",
    "hydra_runtime",
    "is_multirun",
    "register_resolvers",
    "validate_config",
    "write_json_atomic",
]
