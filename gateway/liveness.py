"""Is data still moving? The daemon feeds the systemd watchdog only while it is.

A process whose event loop runs can still be stuck: a dispatcher task that
died leaves its sink at the same ``sent`` count forever, a writer that cannot
commit loses every reading its sources produce. systemd's watchdog restarts a
daemon that stops pinging it, so the daemon stops pinging when data has
stopped moving, and says why (status ``stalled``, the journal once).

What counts as stuck, and what does not:

- **Not stuck**: a sink that is down (network, server, credentials) while its
  readings wait safely in the buffer; that is the buffer's job, and a restart
  would not bring the server back. A full disk (the buffer applies its
  overflow policy, counted; a dispatcher that cannot store dead letters
  retries): a restart would not free space either. An idle gateway.
- **Stuck at once**: the writer task or a dispatcher task has ended (nothing
  restarts it inside this process).
- **Stuck after ``stall_timeout``**: every commit has failed for that long
  while sources produced readings; a dispatcher's own buffer operations
  (take, ack, dead-lettering) have failed for that long without a success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol


class _Dispatcher(Protocol):
    @property
    def broken(self) -> str | None: ...

    @property
    def broken_since(self) -> float | None: ...


class Liveness:
    def __init__(self, *, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._commit_failing_since: float | None = None
        self._commit_error = ""

    def commit_failed(self, exc: BaseException) -> None:
        """A source's readings could not be committed (called by the source's supervisor)."""
        if self._commit_failing_since is None:
            self._commit_failing_since = self._clock()
        self._commit_error = f"{type(exc).__name__}: {exc}"

    def committed(self) -> None:
        """A group commit succeeded (the writer's on_commit)."""
        self._commit_failing_since = None

    def stuck(
        self,
        *,
        writer_task: asyncio.Task[None] | None,
        sink_tasks: Mapping[str, asyncio.Task[None]],
        dispatchers: Mapping[str, _Dispatcher],
    ) -> str | None:
        """Why data has stopped moving, or None while it moves (or has nothing to move)."""
        now = self._clock()
        if writer_task is not None and writer_task.done():
            return "the buffer writer has stopped"
        since = self._commit_failing_since
        if since is not None and now - since >= self.stall_after_s:
            return f"no reading could be committed for {now - since:.0f} s ({self._commit_error})"
        for name, task in sink_tasks.items():
            if task.done():
                return f"the dispatcher of sink {name} has stopped"
        for name, dispatcher in dispatchers.items():
            broken_since = dispatcher.broken_since
            if broken_since is not None and now - broken_since >= self.stall_after_s:
                return f"the dispatcher of sink {name} has failed for {now - broken_since:.0f} s ({dispatcher.broken})"
        return None
