"""Errors users see: each says what went wrong and what to do next.

Every error is an ``AdaptersError`` with a ``hint``; subclasses also subclass the matching builtin
(``ValueError``, ``FileNotFoundError`` ...) so library users can catch what they already know.
The CLI prints ``message`` and ``hint`` and exits with ``exit_code`` (2 for bad input).
"""

from __future__ import annotations

from adapters_store.errors import HintedError


class AdaptersError(HintedError):
    exit_code = 1


class UsageError(AdaptersError):
    """Bad input from the user: a config, a path, a name, an option. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A config file or override that does not validate."""


class DataError(UsageError, ValueError):
    """A dataset that is missing, empty, or does not have what the task needs."""


class BaseModelError(UsageError, LookupError):
    """A base model that cannot be found or loaded."""


class DeviceError(UsageError, RuntimeError):
    """A device or quantization that this machine cannot provide."""


class MethodError(UsageError, ValueError):
    """An adapter method that cannot work with the chosen options."""


class BaseMismatchError(UsageError):
    """An adapter loaded on another base than the one it was trained on: other weights (the
    recorded fingerprint differs), other sizes or other module names."""
