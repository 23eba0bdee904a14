"""Store errors: each says what went wrong and what to do next (``hint``).

Subclasses also subclass the matching builtin (``KeyError``, ``ValueError``) so library users can
catch what they already know. The CLI prints ``message`` and ``hint`` and exits with ``exit_code``.
"""

from __future__ import annotations


class HintedError(Exception):
    """An error for people: ``message`` says what went wrong, ``hint`` what to do next. The
    ``adapters`` package builds its own errors on this one too, so the CLI handles both alike."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"

    def __reduce__(self):  # keep message and hint across pickling (multiprocessing, xdist)
        return (self.__class__, (self.message, self.hint))


class StoreError(HintedError):
    exit_code = 2


class RefNotFound(StoreError, KeyError):
    """A ref (name, name@n, name@alias, sha256:prefix) that matches no version."""

    def __str__(self) -> str:  # KeyError would quote the message
        return StoreError.__str__(self)


class AmbiguousRef(StoreError, ValueError):
    """A ``sha256:`` prefix that matches more than one content id."""


class InvalidName(StoreError, ValueError):
    """A name, alias or ref that does not follow the grammar."""


class InvalidAdapterDir(StoreError, ValueError):
    """A directory that is not a PEFT adapter directory the store accepts."""


class PickleRefused(InvalidAdapterDir):
    """A directory holding pickled weights (.bin, .pt, .pth, .pkl, .ckpt)."""


class IntegrityError(StoreError):
    """Stored bytes that no longer match their recorded sha256."""


class DamagedIndex(StoreError):
    """A store.db that SQLite cannot read (overwritten, truncated, not a database)."""

    exit_code = 1  # not the command's fault: the same command works on a repaired store


class AliasInUse(StoreError):
    """A version that still carries aliases, removed without ``force``."""


class StoreLocked(StoreError, TimeoutError):
    """Another process holds the store lock for too long."""


class StoreVersionError(StoreError, RuntimeError):
    """A store written by a newer release of this tool."""


class InvalidMetadata(StoreError, TypeError):
    """Lineage or metrics that cannot be stored as JSON."""


class DestinationExists(StoreError, FileExistsError):
    """An export destination that exists and is not empty."""


class DestinationUnwritable(StoreError, OSError):
    """An export destination that cannot be written (permissions, a full disk)."""


class StoreNotFound(StoreError, FileNotFoundError):
    """A store opened for reading where there is none (a mistyped ``--store``)."""


class AlreadyStored(StoreError, FileExistsError):
    """An import whose content is already a version of that name; ``version`` is that version."""

    def __init__(self, message: str, hint: str | None = None, version=None):
        super().__init__(message, hint)
        self.version = version

    def __reduce__(self):
        return (self.__class__, (self.message, self.hint, self.version))
