"""Small asyncio helpers.

Why not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
arrives in the loop iteration where the awaited thing completes (CPython
gh-86296, fixed in 3.12). A dispatcher woken by a commit at the moment the
daemon cancelled it then went on looping, and the daemon hung at shutdown.
``asyncio.timeout`` does not have that race, so the core uses it everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
