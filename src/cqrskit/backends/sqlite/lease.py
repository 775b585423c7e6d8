"""Leases for projection workers in processes that share one SQLite data directory.

:class:`SqliteLease` implements :class:`cqrskit.Lease` with one lock file per lease name,
beside the database file it is given (``read.db`` -> ``read.db-leases/<name>.lock``),
locked with ``flock(LOCK_EX | LOCK_NB)``. SQLite's processes share one machine (its
locking does not work over network file systems either), and there a file lock has what a
lease needs:

* at most one holder: the kernel grants an exclusive ``flock`` to one open file at a time,
  whichever process or instance opened it (each instance opens its own, so two instances
  of one process exclude each other too);
* no expiry to tune and no clock to trust: the kernel releases the lock the moment its
  holder's process dies (SIGKILL, OOM), so a standby's next ``acquire`` takes over at once.

``renew`` locks its file again (a no-op while the lock is its own; refused once another
file holds it) and checks that it is still the one at the path (a lock file removed by
hand would let a new holder lock a new file: the old holder then answers False and
stops). An overlap of two holders would be harmless anyway: the runner's checkpoint
compare-and-set (:func:`cqrskit.checkpoints.lock_position`, in each batch's write
transaction) discards a batch read from a checkpoint that has moved.

The calls are non-blocking system calls on a local file: they run on the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from urllib.parse import quote

from ...errors import OperationalError, StoreClosed

__all__ = ["SqliteLease"]


class SqliteLease:
    """:class:`~cqrskit.Lease` on lock files beside the SQLite file at ``path``.

    One instance holds any number of leases (one open lock file each). ``close()``
    releases them all; calls after it raise :class:`~cqrskit.errors.StoreClosed`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.directory = self.path.with_name(f"{self.path.name}-leases")
        self._held: dict[str, int] = {}
        """Lease name -> the descriptor of its locked file."""
        self._closed = False

    @property
    def held(self) -> frozenset[str]:
        """The leases this instance holds."""
        return frozenset(self._held)

    def lock_file(self, name: str) -> Path:
        # Quoted: any name makes one plain file name, and distinct names distinct files.
        return self.directory / f"{quote(name, safe='')}.lock"

    async def acquire(self, name: str) -> bool:
        self._check_open()
        if name in self._held:
            return await self.renew(name)
        path = self.lock_file(name)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OperationalError(f"cannot open the lease file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # another open file holds it
            return False
        except OSError as exc:
            os.close(fd)
            raise OperationalError(f"cannot lock the lease file {path}: {exc}") from exc
        self._held[name] = fd
        return True

    async def renew(self, name: str) -> bool:
        self._check_open()
        fd = self._held.get(name)
        if fd is None:
            return False
        try:
            # Locking again what we hold is a no-op; it fails when another file holds
            # the lock (ours was released behind our back).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ours = os.fstat(fd).st_ino == os.stat(self.lock_file(name)).st_ino
        except OSError:  # locked elsewhere, or the file is gone
            ours = False
        if not ours:
            self._drop(name)
        return ours

    async def release(self, name: str) -> None:
        self._check_open()
        self._drop(name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in list(self._held):
            self._drop(name)

    def _drop(self, name: str) -> None:
        fd = self._held.pop(name, None)
        if fd is not None:
            # Closing the file releases its lock (the file stays: removing it would race
            # with a contender that has opened but not yet locked it).
            with contextlib.suppress(OSError):
                os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the lease is closed")
