"""The event loop's handler for errors no task awaits: one known harmless race is a debug line, not a traceback.

aiomqtt (2.x) registers paho's socket with the loop from paho's callbacks through
``call_soon_threadsafe(loop.add_writer, fd, ...)``. When the link has died meanwhile (a box frozen
by SIGSTOP or a stalled VM resumes, paho sees the keepalive expired and closes the socket), the
scheduled registration runs on a closed descriptor and the loop's default handler logs
``KeyError: 'N is not registered'`` -> ``OSError: [Errno 9] Bad file descriptor`` with a traceback.
Nothing is lost: the client has already reported the disconnection, and the MQTT sink, the fleet
status and the lorawan driver reconnect and log that once. So exactly this error (EBADF raised inside
the loop's own ``add_reader``/``add_writer``) goes to debug; everything else keeps the default handler.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import traceback
from typing import Any

log = logging.getLogger("gateway.loop")

_REGISTRATION = {"add_reader", "add_writer", "_add_reader", "_add_writer"}


def is_stale_socket_registration(exc: BaseException | None) -> bool:
    if not isinstance(exc, OSError) or exc.errno != errno.EBADF:
        return False
    return any(
        frame.name in _REGISTRATION and frame.filename.endswith("selector_events.py")
        for frame in traceback.extract_tb(exc.__traceback__)
    )


def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if is_stale_socket_registration(context.get("exception")):
        log.debug("a closed MQTT socket was registered with the loop after its connection died; ignored")
        return
    loop.default_exception_handler(context)


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(handle)
