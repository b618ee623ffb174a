"""Is the system clock synchronised? Asked of the kernel with adjtimex(2), read-only.

A Raspberry Pi has no battery-backed clock: after a power cut it boots with the
time fake-hwclock saved at the last shutdown (or 1970) and is right only once
NTP (systemd-timesyncd, chrony) has synchronised it, which needs the uplink.
Every reading is timestamped with this clock, so the gateway says when it is
not synchronised: ``gateway_clock_synchronized``, ``clock_synchronized`` in
the status, and a warning once per change.

The daemon asks every second, so the check must be cheap: libc is loaded once
(``ctypes.util.find_library`` runs ``/sbin/ldconfig -p`` in a child process on
every call: 86,400 forks a day). Under the shipped unit's ``ProtectClock=yes``
systemd installs a seccomp filter over the ``@clock`` syscalls, and systemd 252
denies even the read-only ``adjtimex`` with EPERM (systemd issue 26413). Then
systemd-timesyncd's marker file ``/run/systemd/timesync/synchronized`` (created
when it synchronises the clock, readable under ``ProtectSystem=strict``) is
asked instead; without it the answer is "unknown" (None), never silence.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

TIME_ERROR: Final = 5  # adjtimex's answer when the clock is not synchronised
STA_UNSYNC: Final = 0x0040
TIMESYNC_MARKER: Final = Path("/run/systemd/timesync/synchronized")


class _Timex(ctypes.Structure):
    # struct timex of glibc on Linux; only ``status`` is read. Trailing padding
    # is generous so the kernel never writes past the buffer.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_long * 32),
    ]


Adjtimex = Callable[[_Timex], int]  # returns the clock state, or -1 with errno set


def _load_adjtimex() -> Adjtimex | None:
    """adjtimex from the libc this process already has loaded (no ldconfig, no fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running process: libc is in it
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(_Timex)]
    fn.restype = ctypes.c_int
    return lambda timex: int(fn(ctypes.byref(timex)))


_ADJTIMEX: Final = _load_adjtimex()


class ClockCheck:
    """``check()`` -> True (synchronised), False (not), None (cannot tell). Cheap: no fork, no file open
    unless the kernel refuses to answer."""

    def __init__(self, *, adjtimex: Adjtimex | None = _ADJTIMEX, timesync_marker: Path = TIMESYNC_MARKER) -> None:
        self._adjtimex = adjtimex
        self.timesync_marker = timesync_marker
        self.source = "adjtimex"  # which source gave the last answer (shown in the status)

    def __call__(self) -> bool | None:
        if self._adjtimex is not None:
            timex = _Timex()  # modes = 0: read only
            ctypes.set_errno(0)
            state = self._adjtimex(timex)
            if state >= 0:
                self.source = "adjtimex"
                return state != TIME_ERROR and not timex.status & STA_UNSYNC
            # EPERM under ProtectClock (seccomp), ENOSYS in some sandboxes: ask timesyncd instead.
        return self._from_timesyncd()

    def _from_timesyncd(self) -> bool | None:
        # The marker says "synchronised"; its absence says nothing (chrony or
        # ntpd may be the NTP client), so the answer is then unknown.
        if os.path.exists(self.timesync_marker):
            self.source = "timesyncd"
            return True
        self.source = "unknown"
        return None


_DEFAULT: Final = ClockCheck()


def clock_synchronized() -> bool | None:
    """True if the clock is synchronised, False if not, None if it cannot tell (see the module doc)."""
    return _DEFAULT()
