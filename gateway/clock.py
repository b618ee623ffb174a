"""Is the system clock synchronised? Asked of the kernel with adjtimex(2), read-only.

A Raspberry Pi has no battery-backed clock: after a power cut it boots with the
time fake-hwclock saved at the last shutdown (or 1970) and is right only once
NTP (systemd-timesyncd, chrony) has synchronised it, which needs the uplink.
Every reading is timestamped with this clock, so the gateway says when it is
not synchronised: ``gateway_clock_synchronized``, ``clock_synchronized`` in
the status, and a warning once per change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

TIME_ERROR = 5  # adjtimex's answer when the clock is not synchronised
STA_UNSYNC = 0x0040


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


def clock_synchronized() -> bool | None:
    """True if the kernel says the clock is synchronised, False if not, None if it cannot tell."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()  # modes = 0: read only, needs no privilege
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not timex.status & STA_UNSYNC
