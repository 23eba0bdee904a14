"""Inter-process locks on lock files.

On POSIX these are ``fcntl.flock`` locks on a file descriptor kept open while the lock object
lives: acquiring and releasing is two syscalls, and the kernel drops the lock when the holder dies
(even by SIGKILL), which is how dead writers' staging dirs are recognised. Elsewhere (Windows)
filelock provides the same behaviour.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class LockTimeout(Exception):
    pass


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (11, 13):  # EAGAIN, EACCES on some filesystems
            return False
        raise
    return True


class ProcessLock:
    """A reentrant lock shared by the threads of one process and exclusive between processes."""

    def __init__(self, path: str | os.PathLike, timeout: float = -1):
        self.path = Path(path)
        self.timeout = timeout
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = os.getpid()
        self._fallback = None
        if fcntl is None:  # pragma: no cover
            from filelock import FileLock

            self._fallback = FileLock(self.path, timeout=timeout, poll_interval=0.002)

    def acquire(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            from filelock import Timeout

            try:
                self._fallback.acquire()
            except Timeout:
                raise LockTimeout(str(self.path)) from None
            return
        deadline = None if self.timeout < 0 else time.monotonic() + self.timeout
        if not self._rlock.acquire(timeout=-1 if deadline is None else max(self.timeout, 0)):
            raise LockTimeout(str(self.path))
        try:
            if self._depth == 0:
                self._flock(deadline)
            self._depth += 1
        except BaseException:
            self._rlock.release()
            raise

    def _flock(self, deadline: float | None) -> None:
        if self._fd is None or self._pid != os.getpid():  # after a fork: a descriptor of our own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        delay = 0.0002
        while not _try_flock(self._fd):
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(str(self.path))
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
            return
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._rlock.release()

    def close(self) -> None:
        if self._fd is not None and self._depth == 0:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
        except (OSError, AttributeError):
            pass

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class OwnerLock:
    """A non-blocking lock that marks a staging dir as owned by a live process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._fallback = None

    def try_acquire(self) -> bool:
        """True if we now hold it; False if a live process does (or the dir is gone)."""
        if fcntl is None:  # pragma: no cover
            from filelock import FileLock, Timeout

            self._fallback = FileLock(self.path, timeout=0)
            try:
                self._fallback.acquire()
            except (Timeout, OSError):
                return False
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        if not _try_flock(fd):
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
        elif self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class SharedLock:
    """Held shared by any number of holders, or exclusively by one: in-flight puts hold it shared
    from their first blob to their commit, gc holds it exclusively, so gc never deletes a blob that
    a put has written or reused but not yet recorded.

    Two flocks: the lock itself (``LOCK_SH`` / ``LOCK_EX``) and a gate in front of it. The
    exclusive holder closes the gate before it waits, so a steady stream of overlapping puts cannot
    starve gc; a put passes the gate (shared, for an instant) before it takes the lock. The threads
    of one process share one shared hold. Where fcntl is missing (Windows) both are no-ops, and a
    put re-creates the blobs a concurrent gc took.
    """

    def __init__(self, path: str | os.PathLike, gate: str | os.PathLike, timeout: float = -1):
        self.path, self.gate = Path(path), Path(gate)
        self.timeout = timeout
        self._count = 0
        self._mutex = threading.Lock()  # guards _count and the shared fd
        self._shared_fd: int | None = None
        self._pid = os.getpid()
        self._exclusive = threading.Lock()  # one exclusive holder per instance

    def _open(self, path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @staticmethod
    def _wait(fd: int, mode: int, deadline: float | None, path: Path) -> None:
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (11, 13):
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(str(path))
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _deadline(self) -> float | None:
        return None if self.timeout < 0 else time.monotonic() + self.timeout

    def acquire_shared(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        with self._mutex:
            if self._pid != os.getpid():  # after a fork the parent's hold is not ours
                self._count, self._shared_fd, self._pid = 0, None, os.getpid()
            if self._count == 0:
                deadline = self._deadline()
                gate = self._open(self.gate)
                try:
                    self._wait(gate, fcntl.LOCK_SH, deadline, self.gate)
                    fd = self._open(self.path)
                    try:
                        self._wait(fd, fcntl.LOCK_SH, deadline, self.path)
                    except BaseException:
                        os.close(fd)
                        raise
                finally:
                    os.close(gate)  # closing drops the gate's flock
                self._shared_fd = fd
            self._count += 1

    def release_shared(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        with self._mutex:
            self._count -= 1
            if self._count == 0 and self._shared_fd is not None:
                os.close(self._shared_fd)
                self._shared_fd = None

    def acquire_exclusive(self) -> tuple[int, int] | None:
        """Returns a token for ``release_exclusive``."""
        if fcntl is None:  # pragma: no cover
            return None
        deadline = self._deadline()
        if not self._exclusive.acquire(timeout=-1 if deadline is None else max(self.timeout, 0)):
            raise LockTimeout(str(self.path))
        gate = fd = None
        try:
            gate = self._open(self.gate)
            self._wait(gate, fcntl.LOCK_EX, deadline, self.gate)
            fd = self._open(self.path)
            self._wait(fd, fcntl.LOCK_EX, deadline, self.path)
        except BaseException:
            for f in (fd, gate):
                if f is not None:
                    os.close(f)
            self._exclusive.release()
            raise
        return gate, fd

    def release_exclusive(self, token: tuple[int, int] | None) -> None:
        if token is None:  # pragma: no cover
            return
        for f in reversed(token):
            os.close(f)
        self._exclusive.release()
