"""The upkeep of an SQLite backend: fair turns, the file's identity, WAL back-pressure, sweeps.

Statements run inline, so without turns a loop of awaited calls would never let other tasks
run. Every call starts with one clock read; once :data:`SLICE` seconds have passed since the
last turn, the call first takes a turn (:meth:`Upkeep._turn`): it yields to the loop
(``await asyncio.sleep(0)``), checks at most every :data:`IDENTITY_EVERY` seconds that the path
still names the open file, and waits for a checkpoint when the WAL is over its hard limit.
``bench/bench_sqlite.py`` measures the cost, ``tests/test_sqlite.py`` the largest gap a
ticker task sees during back-to-back calls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from .._backend_util import LoopGuard, weak_call_later
from .._errors import BackendUnavailableError
from . import _sql
from ._connection import HARD_BYTES, Checkpointer, file_identity, wal_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["IDENTITY_EVERY", "SLICE", "WAKE_EVERY", "Upkeep", "clock"]

# WAL pages written (estimated: one per write, plus one per 4 KiB of value) between two wake-ups
# of the checkpoint thread, each with a WAL size check: about 1 MiB of WAL.
WAKE_EVERY = 256
SLICE = 0.005  # seconds of inline work between two turns
IDENTITY_EVERY = 0.25  # seconds between checks that the path is still the open file
clock = time.perf_counter


class Upkeep:
    """What :class:`~gramio_storage.sqlite.SQLiteBackend` does besides its statements."""

    if TYPE_CHECKING:
        _path: str
        _abspath: str
        _timeout: float
        _closed: bool
        _read_only: bool
        _sweep_interval: float | None
        _clock: Callable[[], float]
        _sql: _sql.Statements
        _ex: Callable[..., sqlite3.Cursor]
        _identity: tuple[int, int] | None
        _checkpointer: Checkpointer | None

    def _init_upkeep(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._guard = LoopGuard()
        self._due = 0.0  # perf_counter time of the next turn (see _turn)
        self._identity_due = 0.0
        self._lost: str | None = None  # why the file is gone, once it is
        self._pressure = False  # the WAL is over HARD_BYTES: the next call waits
        self._writes = 0  # WAL pages written since the checkpoint thread was last woken

    async def _turn(self) -> None:
        """Between two slices of inline work: yield to the loop, and check the file.

        Called at the start of an operation once :data:`SLICE` has passed since the last
        turn, and on every call once the file is lost or the WAL is over its hard limit.
        """
        if self._lost is not None:
            raise BackendUnavailableError(self._lost, backend="sqlite")
        await asyncio.sleep(0)
        if self._guard.changed():  # a second asyncio.run(): the old loop's timer is gone
            self._timer = None
            self._start_sweeping()
        now = clock()
        if now >= self._identity_due and self._identity is not None:
            self._identity_due = now + IDENTITY_EVERY
            if file_identity(self._abspath) != self._identity:
                self._lose()
        if self._pressure:
            await self._wait_for_checkpoint()
        self._due = clock() + SLICE

    def _lose(self) -> None:
        self._lost = (
            f"SQLite database {self._path!r} was deleted or replaced while open: writes would "
            "go to a file nobody can see any more. Reopen the storage"
        )
        self._due = 0.0  # every later call takes the turn, which raises
        if self._checkpointer is not None:
            self._checkpointer.stop()
        raise BackendUnavailableError(self._lost, backend="sqlite")

    async def _wait_for_checkpoint(self) -> None:
        """Back-pressure: the WAL is over HARD_BYTES, so wait (in asyncio) for a checkpoint."""
        self._pressure = False
        ckpt = self._checkpointer
        if ckpt is None:
            return
        ckpt.wake()
        await ckpt.wait_idle(self._timeout)

    def _wrote(self, ttl: float | None = None, count: int = 1) -> None:
        """Bookkeeping after a write: checkpoint now and then, sweep if TTLs are in use."""
        self._writes += count
        if self._writes >= WAKE_EVERY:
            self._upkeep()
        if ttl is not None and self._timer is None:
            self._start_sweeping()

    def _upkeep(self) -> None:
        """Wake the checkpoint thread; past the WAL's hard limit, make the next call wait."""
        self._writes = 0
        ckpt = self._checkpointer
        if ckpt is None or self._closed:
            return
        ckpt.wake()
        if wal_bytes(self._abspath) >= HARD_BYTES:
            self._pressure = True
            self._due = 0.0

    def _start_sweeping(self) -> None:
        if (
            self._timer is not None
            or self._closed
            or self._sweep_interval is None
            or self._read_only
        ):
            return
        # Weak: a pending timer must not keep a dropped backend alive. Built outside a loop,
        # there is no timer yet: the first TTL write starts it.
        self._timer = weak_call_later(self._sweep_interval, self._sweep)

    def _sweep(self) -> None:
        """Delete a batch of expired rows; continue soon if there may be more."""
        self._timer = None
        if self._closed:
            return
        try:
            deleted = self._ex(self._sql.sweep, (self._clock(),)).rowcount
        except sqlite3.Error:
            # Busy (another process writes) or failing: the next tick tries again, and reads
            # ignore expired rows meanwhile. Nobody awaits a sweep, so nobody to raise to.
            deleted = 0
        if deleted:
            self._wrote(count=deleted)
        if self._writes:
            self._upkeep()  # a quiet bot's WAL is folded in at each sweep
        assert self._sweep_interval is not None
        delay = 0.0 if deleted >= _sql.SWEEP_BATCH else self._sweep_interval
        self._timer = weak_call_later(delay, self._sweep)

    async def _stop_upkeep(self) -> None:
        """Cancel the sweep, fold the WAL in, end the checkpoint thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ckpt = self._checkpointer
        if ckpt is not None and self._lost is None:
            # A last checkpoint folds the WAL in, so the one SQLite runs when the connection
            # closes (on this thread) finds nothing to sync; then the thread ends.
            ckpt.wake()
            await ckpt.wait_idle(self._timeout)
        if ckpt is not None:
            await ckpt.join()
