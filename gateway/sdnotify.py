"""Tell systemd about the daemon's state: the sd_notify(3) protocol.

Hand-written rather than a dependency: the protocol is one datagram of
``KEY=value`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``, and the
Python bindings (``systemd-python``, ``sdnotify``) either need libsystemd
headers to build on the Pi or block and raise, which a daemon must not.

Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op, so the
daemon calls it unconditionally. Nothing here raises: a failed send is logged
once on the transition into failure and once when sending works again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY/RELOADING/STOPPING/WATCHDOG/STATUS to the service manager."""

    def __init__(self, *, environ: Mapping[str, str] | None = None, logger: logging.Logger | None = None) -> None:
        env = os.environ if environ is None else environ
        self._log = logger or log
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""), self._log)
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def ready(self, status: str = "") -> bool:
        """Start-up (or a reload) finished: the service is up."""
        return self._send("READY=1", *_status_line(status))

    def reloading(self) -> bool:
        """A reload began; READY=1 must follow when it is done.

        MONOTONIC_USEC lets systemd (Type=notify-reload, >= 253) tell this
        reload apart from an older one; systemd 252 just ignores it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        """Shutdown began: flushing the buffer and closing sinks."""
        return self._send("STOPPING=1", *_status_line(status))

    def watchdog(self) -> bool:
        """Keep-alive; must come more often than WatchdogSec or systemd kills us."""
        return self._send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by ``systemctl status`` ("" clears it)."""
        return self._send(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up/shutdown time (e.g. recovering a large buffer)."""
        return self._send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def watchdog_interval_s(self) -> float | None:
        """How often to call :meth:`watchdog`: half of WatchdogSec, or None when off.

        Half, as sd_watchdog_enabled(3) recommends, so one late ping is not fatal.
        """
        return None if self._watchdog_usec is None else self._watchdog_usec / 2_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, *lines: str) -> bool:
        if self._address is None or not lines:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a busy systemd: drop and log instead.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                self._log.warning("cannot notify systemd at %s: %s", _shown(self._address), exc)
            return False
        if self._failing:
            self._failing = False
            self._log.info("notifying systemd works again")
        return True


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.split())


def _status_line(text: str) -> tuple[str, ...]:
    return (f"STATUS={_one_line(text)}",) if text else ()


def _socket_address(value: str, logger: logging.Logger) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    # e.g. systemd 254's "vsock:CID:PORT" (VMs): not needed on a Pi.
    logger.warning("NOTIFY_SOCKET=%r is not a supported address; systemd notifications are off", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    # Set by systemd for the main process; a child that inherited it must not ping.
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _shown(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
