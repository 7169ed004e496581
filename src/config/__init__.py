"""Everything that checks a config before a run is built: the schema of every key (schema.py), the
combination checks (validation.py) and the registry of models and nets read from conf/
(registry.py). It sits above the models and data it checks; nothing below imports it."""

from src.config.schema import check_schema
from src.config.validation import accepted_keys, check_paths, is_translation_data, validate_config

__all__ = ["accepted_keys", "check_paths", "check_schema", "is_translation_data", "validate_config"]
