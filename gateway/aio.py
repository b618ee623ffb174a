"""Small asyncio helpers.

Why not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
arrives in the loop iteration where the awaited thing completes or times out
(CPython gh-86296, fixed in 3.12). A dispatcher woken by a commit at the moment
the daemon cancelled it then went on looping, and the daemon hung at shutdown.
``asyncio.timeout`` does not have that race, so the core uses it everywhere.

Libraries still use ``wait_for``: pymodbus for every request on a serial
framing, aiomqtt for the LoRaWAN driver's and the fleet agent's subscriptions.
Measured with a silent Modbus unit and a 4 ms timeout, 6 of 300
cancellations of the driver task were swallowed, and the task polled on
forever (a CI run hung 180 s in a test's teardown). Two defences:
``raise_if_cancel_requested`` in every long-running loop that calls such a
library, and ``cancel_and_wait``, which cancels again a task that did not stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


def raise_if_cancel_requested() -> None:
    """Raise CancelledError if this task was cancelled and something below swallowed it.

    ``Task.cancelling()`` keeps counting a cancel request until it is explicitly
    withdrawn (``uncancel``, as ``asyncio.timeout`` does for its own), so a
    request lost inside a library's ``wait_for`` is still visible here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(
    tasks: Mapping[str, asyncio.Task[None]], *, logger: logging.Logger, again_after_s: float = 2.0
) -> dict[str, BaseException]:
    """Cancel ``tasks`` and wait until all have ended, cancelling again any that ignores it.

    Returns the exception each task ended with, other than its cancellation.
    """
    for task in tasks.values():
        task.cancel()
    pending = set(tasks.values())
    names = {task: name for name, task in tasks.items()}
    warned: set[asyncio.Task[None]] = set()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
        for task in pending:
            if task not in warned:
                warned.add(task)
                logger.warning("task %s did not stop when cancelled; cancelling it again", names[task])
            task.cancel()
    errors: dict[str, BaseException] = {}
    for name, task in tasks.items():
        if not task.cancelled() and task.exception() is not None:
            errors[name] = task.exception()  # type: ignore[assignment]
    return errors
