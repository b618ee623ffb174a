"""RN2483 and RAK3172 (RUI3) modem emulators on a pty pair.

The driver opens ``emulator.path`` (the pty's slave side) like a real serial
port; the emulator answers on the master side. Command sets and replies follow
docs/protocols.md#4a-microchip-rn2483 (RN2483) and docs/protocols.md#4b-rakwireless-rak3172-rui3-firmware
(RAK3172 RUI3). ``inject(payload, rssi, snr)``
plays a received radio packet; it is delivered only if the driver has armed
reception, as on the real modem (an RN2483 returns to idle after each packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from dataclasses import dataclass, field


@dataclass(slots=True)
class EmulatorStats:
    commands: list[str] = field(default_factory=list)
    delivered: int = 0
    missed: int = 0  # packets injected while reception was not armed


class ModemEmulator:
    model = "modem"

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: a plain byte pipe like a UART
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.stats = EmulatorStats()
        self._buffer = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- plumbing ------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop = None
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return  # the other side closed: wait for it to reopen
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            command = line.decode("ascii", "replace").strip()
            self.stats.commands.append(command)
            for reply in self.handle(command):
                self.write_line(reply)

    def write_line(self, line: str) -> None:
        """Send one line to the driver (also for injecting garbage in tests)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, line.encode("ascii") + b"\r\n")

    async def write_long_line(self, line: str) -> None:
        """Send a line longer than the pty's buffer, waiting while the driver drains it."""
        data = line.encode("ascii") + b"\r\n"
        while data:
            try:
                data = data[os.write(self._master, data) :]
            except BlockingIOError:
                await asyncio.sleep(0.005)

    # --- behaviour -----------------------------------------------------------

    def handle(self, command: str) -> list[str]:
        raise NotImplementedError

    def inject(self, payload: bytes, *, rssi: int = -60, snr: int = 9) -> bool:
        raise NotImplementedError


class RN2483Emulator(ModemEmulator):
    """Microchip RN2483: ``mac pause``, ``radio rx 0``, ``radio_rx  <hex>``, ``radio get snr``."""

    model = "rn2483"

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.armed = False
        self.last_snr = 0

    def handle(self, command: str) -> list[str]:
        words = command.split()
        if command == "sys get ver":
            return ["RN2483 1.0.5 Oct 31 2018 15:06:52"]
        if command == "mac pause":
            self.paused = True
            return ["4294967245"]
        if command == "radio get snr":
            return [str(self.last_snr)]
        if words[:2] == ["radio", "set"] and len(words) == 4:
            if words[2] == "sf" and words[3] not in {f"sf{n}" for n in range(7, 13)}:
                return ["invalid_param"]
            return ["ok"]
        if words[:2] == ["radio", "rx"] and len(words) == 3:
            if not self.paused:
                return ["busy"]
            self.armed = True
            return ["ok"]
        return ["invalid_param"]

    def inject(self, payload: bytes, *, rssi: int = -60, snr: int = 9) -> bool:
        if not self.armed:
            self.stats.missed += 1
            return False
        self.armed = False  # back to idle until the host re-arms
        self.last_snr = snr
        self.write_line("radio_rx  " + payload.hex().upper())
        self.stats.delivered += 1
        return True

    def inject_error(self) -> None:
        """The receive watchdog expired: ``radio_err``, reception stops."""
        self.armed = False
        self.write_line("radio_err")


class RAK3172Emulator(ModemEmulator):
    """RAK3172 with RUI3: ``AT+NWM=0``, ``AT+P2P=...``, ``AT+PRECV=65534``, ``+EVT:RXP2P:rssi:snr:hex``."""

    model = "rak3172"

    def __init__(self) -> None:
        super().__init__()
        self.mode = 1  # LoRaWAN after power-up
        self.p2p: list[str] = []
        self.receiving = False

    def handle(self, command: str) -> list[str]:
        if command == "AT":
            return ["OK"]
        if command == "AT+VER=?":
            return ["AT+VER=3.2.0-rui3-emulator", "OK"]
        if command.startswith("AT+NWM="):
            value = command.split("=", 1)[1]
            if value not in ("0", "1"):
                return ["AT_PARAM_ERROR"]
            self.mode = int(value)
            return ["OK"]
        if command.startswith("AT+P2P="):
            if self.mode != 0:
                return ["AT_MODE_NO_SUPPORT"]
            if self.receiving:
                return ["AT_BUSY_ERROR"]
            fields = command.split("=", 1)[1].split(":")
            if len(fields) != 6 or not all(f.lstrip("-").isdigit() for f in fields):
                return ["AT_PARAM_ERROR"]
            self.p2p = fields
            return ["OK"]
        if command.startswith("AT+PRECV="):
            if self.mode != 0:
                return ["AT_MODE_NO_SUPPORT"]
            value = command.split("=", 1)[1]
            if not value.isdigit() or int(value) > 65535:
                return ["AT_PARAM_ERROR"]
            self.receiving = int(value) != 0
            return ["OK"]
        return ["AT_ERROR"]

    def inject(self, payload: bytes, *, rssi: int = -60, snr: int = 9) -> bool:
        if not self.receiving:
            self.stats.missed += 1
            return False
        self.write_line(f"+EVT:RXP2P:{rssi}:{snr}:{payload.hex().upper()}")
        self.stats.delivered += 1
        return True


EMULATORS: dict[str, type[ModemEmulator]] = {"rn2483": RN2483Emulator, "rak3172": RAK3172Emulator}
