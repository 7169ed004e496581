"""The bottom layer every package may import (and which imports no other package of src/): where
the project lives, the config resolvers, errors, atomic checked files, rules of config keys."""

from src.utils.errors import ConfigError, UserError
from src.utils.files import write_json_atomic
from src.utils.project import PROJECT_ROOT, hydra_runtime, is_multirun, register_resolvers

__all__ = [
    "PROJECT_ROOT",
    "ConfigError",
    "UserError",
    "hydra_runtime",
    "is_multirun",
    "register_resolvers",
    "write_json_atomic",
]
