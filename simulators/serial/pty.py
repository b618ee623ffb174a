"""A simulated serial sensor on a pty pair, with fault knobs, run inside an asyncio loop.

The driver opens the pty's slave side through a stable symlink (``link``), as
it would open ``/dev/serial/by-id/...``. ``unplug()`` closes the pty and
removes the link, as a USB adapter does when pulled; ``replug()`` creates a new
pty behind the same link.

Noise never contains the binary sync byte and text noise is a line of its
own, so every valid frame the simulator sends can be accounted for by a test.
``glued_noise`` is the exception, for NMEA: noise without a line end that
sticks to the start of the next sentence, which the decoder must cut off at
the ``$``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import tty
from dataclasses import dataclass, field
from pathlib import Path

from .devices import BINARY, corrupt_checksum, make_frame, pms5003_reply, sds011_reply


@dataclass(slots=True)
class Faults:
    """Probabilities per frame, 0..1."""

    noise: float = 0.0
    bad_checksum: float = 0.0
    truncate: float = 0.0
    glued_noise: float = 0.0  # text devices: noise with no line end, glued to the frame's start


@dataclass(slots=True)
class SentFrame:
    n: int
    values: dict[str, float]
    valid: bool


@dataclass(slots=True)
class PtySimulator:
    device: str
    link: Path
    rate_hz: float = 1.0
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    query_mode: bool = False  # SDS011 query / PMS5003 passive: answer requests only
    sent: list[SentFrame] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    _master: int = -1
    _slave: int = -1
    _n: int = 0
    _silent: bool = False
    _task: asyncio.Task[None] | None = None
    _inbox: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    async def start(self) -> None:
        self.replug()
        self._task = asyncio.create_task(self._emit_loop(), name=f"sim-{self.device}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.unplug()

    def replug(self) -> None:
        if self.plugged:
            return
        self._master, self._slave = os.openpty()
        # Raw, so the line discipline neither echoes nor rewrites bytes before the driver opens it.
        tty.setraw(self._slave)
        flags = fcntl.fcntl(self._master, fcntl.F_GETFL)
        fcntl.fcntl(self._master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self._slave))
        tmp.replace(self.link)  # atomic: the link never points at a half-made pty
        asyncio.get_running_loop().add_reader(self._master, self._on_command)

    def unplug(self) -> None:
        if not self.plugged:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def silence(self, silent: bool) -> None:
        self._silent = silent

    def write(self, data: bytes) -> bool:
        """Write raw bytes; False when unplugged or the pty buffer is full (nobody reading)."""
        if not self.plugged:
            return False
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            return False
        return True

    def send_frame(self) -> None:
        """Send the next frame, with the configured faults drawn at random."""
        n, self._n = self._n, self._n + 1
        frame = make_frame(self.device, n)
        rng, faults = self._rng, self.faults
        if rng.random() < faults.noise:
            self.write(self._noise())
        if faults.glued_noise and rng.random() < faults.glued_noise:  # no draw when off: seeds stay comparable
            self.write(self._noise().rstrip(b"\r\n"))
        data, valid = frame.data, True
        if rng.random() < faults.bad_checksum:
            data, valid = corrupt_checksum(self.device, data), False
        elif rng.random() < faults.truncate:
            data, valid = data[: rng.randrange(1, len(data) - 1)], False
        if self.write(data):
            self.sent.append(SentFrame(n, frame.values, valid))

    def _noise(self) -> bytes:
        size = self._rng.randrange(1, 24)
        sync = BINARY.get(self.device)
        if sync is not None:
            return bytes(b for b in self._rng.randbytes(size) if b != sync[0])
        return bytes(self._rng.choice(b"abcdefxyz#@!%&0123456789 ") for _ in range(size)) + b"\r\n"

    async def _emit_loop(self) -> None:
        period = 1.0 / self.rate_hz
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            if not self._silent and not self.query_mode:
                self.send_frame()
            next_t += period
            await asyncio.sleep(max(0.0, next_t - loop.time()))

    def _on_command(self) -> None:
        """Answer SDS011 / PMS5003 mode and query commands written by the driver."""
        try:
            self._inbox += os.read(self._master, 256)
        except OSError:
            return  # EIO while nobody holds the slave side open
        if self.device == "sds011":
            self._sds011_commands()
        elif self.device == "pms5003":
            self._pms5003_commands()
        else:
            self._inbox.clear()

    def _sds011_commands(self) -> None:
        while (start := self._inbox.find(b"\xaa\xb4")) >= 0 and len(self._inbox) - start >= 19:
            cmd = bytes(self._inbox[start : start + 19])
            del self._inbox[: start + 19]
            if cmd[2] == 0x02 and cmd[3] == 1:
                self.query_mode = cmd[4] == 1
                self.write(sds011_reply(0x02, 1, cmd[4]))
            elif cmd[2] == 0x04 and not self._silent:
                self.send_frame()
            elif cmd[2] == 0x08 and cmd[3] == 1:
                self.write(sds011_reply(0x08, 1, cmd[4]))

    def _pms5003_commands(self) -> None:
        while (start := self._inbox.find(b"\x42\x4d")) >= 0 and len(self._inbox) - start >= 7:
            cmd = bytes(self._inbox[start : start + 7])
            del self._inbox[: start + 7]
            if cmd[2] == 0xE1:
                self.query_mode = cmd[4] == 0
                self.write(pms5003_reply(0xE1, cmd[4]))
            elif cmd[2] == 0xE2 and not self._silent:
                self.send_frame()
