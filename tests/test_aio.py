"""Stopping tasks whose libraries swallow a cancellation (gateway/aio.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.aio import cancel_and_wait, raise_if_cancel_requested


async def _swallows_first_cancel(log: list[str]) -> None:
    """What a library's ``wait_for`` does on Python 3.11 when the cancel lands as it times out."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        log.append("swallowed")
    log.append("looping on")
    await asyncio.sleep(60)


async def test_cancel_and_wait_cancels_again_a_task_that_ignored_it(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    task = asyncio.create_task(_swallows_first_cancel(log))
    await asyncio.sleep(0)
    errors = await cancel_and_wait({"stubborn": task}, logger=logging.getLogger("t"), again_after_s=0.05)
    assert task.cancelled() and errors == {}
    assert log == ["swallowed", "looping on"]
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["task stubborn did not stop when cancelled; cancelling it again"]


async def test_cancel_and_wait_returns_the_errors_tasks_ended_with() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("close failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    errors = await cancel_and_wait({"t": task}, logger=logging.getLogger("t"))
    assert isinstance(errors["t"], RuntimeError)


async def test_a_swallowed_cancel_is_raised_at_the_next_loop_turn() -> None:
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            raise_if_cancel_requested()
            turns += 1
            with contextlib.suppress(asyncio.CancelledError):  # swallowed, as pymodbus' wait_for can
                await asyncio.sleep(60)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert turns == 1


async def test_timeouts_of_our_own_do_not_look_like_a_cancel() -> None:
    # asyncio.timeout withdraws its own cancel request (uncancel), so the loop goes on
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)
        raise_if_cancel_requested()
