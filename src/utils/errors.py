"""The project's errors for bad input: an entry point shows their message as one line (exit 2)."""


class UserError(Exception):
    """Input that cannot work (a config value, a file, a folder); the message names the key or
    file, what is wrong and what would do. Entry points print it without a stack trace."""


class ConfigError(UserError, ValueError):
    """A config value or combination that cannot work; the message names key and allowed values."""
