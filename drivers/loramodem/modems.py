"""The two modem dialects: set-up commands, how reception is armed, how a packet looks.

RN2483 (docs/protocols.md#4a-microchip-rn2483): ``mac pause`` (answer: the pause in ms), ``radio set
...``, ``radio rx 0`` -> ``ok``; later ``radio_rx  <hex>`` (two spaces) or
``radio_err``; the radio is then idle and must be re-armed. SNR of the last
packet: ``radio get snr``; RSSI is not available on all firmware, so none.

RAK3172 RUI3 (docs/protocols.md#4b-rakwireless-rak3172-rui3-firmware): ``AT+NWM=0``,
``AT+P2P=freq:sf:bw:cr:preamble:power``,
``AT+PRECV=65534`` (continuous) -> ``OK``; packets arrive as
``+EVT:RXP2P:<rssi>:<snr>:<hex>`` (the pre-RUI3 two-line form is accepted too).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gateway.drivers.loramodem.config import LoRaModemConfig

CR_INDEX = {"4/5": 0, "4/6": 1, "4/7": 2, "4/8": 3}


class ModemError(Exception):
    """The modem refused a command or did not answer. ``kind`` is the error-counter label."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(detail)


class LineTooLong(ModemError):
    """A line longer than the serial reader's limit; the reader dropped it."""


@dataclass(frozen=True, slots=True)
class Packet:
    payload: bytes
    ts_ns: int
    rssi: int | None = None
    snr: int | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """An unsolicited line that looked like a packet but could not be decoded."""

    kind: str
    line: str


class Modem:
    ok_replies: tuple[str, ...] = ("ok",)

    def __init__(self, config: LoRaModemConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer

    async def read_line(self, timeout: float | None) -> str:
        # asyncio.timeout, not wait_for: see gateway/aio.py (3.11 can swallow a cancellation).
        async with asyncio.timeout(timeout):
            try:
                raw = await self.reader.readline()
            except ValueError as exc:  # longer than the reader's limit (64 KiB): noise, not a modem line
                raise LineTooLong("line_too_long", str(exc)) from exc
        if not raw:
            raise ModemError("port_closed", "the serial port was closed")
        return raw.decode("ascii", "replace").strip()

    async def command(self, command: str, *, expect: str | re.Pattern[str] | None = None) -> str:
        """Send one command and return its reply; a refusal or a timeout raises ``ModemError``."""
        self.writer.write(command.encode("ascii") + b"\r\n")
        await self.writer.drain()
        while True:
            try:
                line = await self.read_line(self.config.response_timeout)
            except TimeoutError as exc:
                raise ModemError("timeout", f"no answer to {command!r}") from exc
            if not line:
                continue
            if isinstance(expect, re.Pattern):
                if expect.fullmatch(line):
                    return line
            elif line == (expect or self.ok_replies[0]) or (expect is None and line in self.ok_replies):
                return line
            if self.is_unsolicited(line):
                continue  # a late event from before the set-up; not the answer
            raise ModemError("command_refused", f"{command!r} answered {line!r}")

    def is_unsolicited(self, line: str) -> bool:
        return False

    async def setup(self) -> None:
        raise NotImplementedError

    def packets(self) -> AsyncIterator[Packet | BadLine]:
        raise NotImplementedError


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


# ASCII digits, a few of them: a noisy line of 5000 digits must not reach int() (4300-digit limit).
_SNR = re.compile(r"-?[0-9]{1,4}")


class RN2483(Modem):
    async def setup(self) -> None:
        c = self.config
        await self.command("sys get ver", expect=re.compile(r"RN2\d83.*"))
        await self.command("mac pause", expect=re.compile(r"\d+"))
        for setting in (
            "mod lora",
            f"freq {c.frequency}",
            f"sf sf{c.spreading_factor}",
            f"bw {c.bandwidth}",
            f"cr {c.coding_rate}",
            f"prlen {c.preamble}",
            "wdt 0",  # wdt 0: listen forever, no radio_err every 15 s
        ) + ((f"sync {c.sync_word}",) if c.sync_word else ()):
            await self.command(f"radio set {setting}")
        await self.command("radio rx 0")

    def is_unsolicited(self, line: str) -> bool:
        return line.startswith("radio_rx") or line == "radio_err"

    async def packets(self) -> AsyncIterator[Packet | BadLine]:
        parser = RN2483Lines()
        while True:
            try:
                line = await self.read_line(None)
            except LineTooLong as exc:
                yield BadLine(exc.kind, "")
                continue
            item = parser.parse(line, time.time_ns())
            if line.startswith("radio_rx"):
                snr_line = await self.command("radio get snr", expect=_SNR)
                await self.command("radio rx 0")  # the radio is idle after a packet
                if isinstance(item, Packet):
                    item = replace(item, snr=int(snr_line))
            elif line == "radio_err":
                await self.command("radio rx 0")
            if item is not None:
                yield item


class RN2483Lines:
    """RN2483 unsolicited lines -> packets (without SNR, which takes a command). Pure, so it can be fuzzed."""

    def parse(self, line: str, ts_ns: int) -> Packet | BadLine | None:
        if line.startswith("radio_rx"):
            payload = _hex(line[8:].strip())
            return BadLine("bad_hex", line) if payload is None else Packet(payload, ts_ns)
        if line == "radio_err":
            return BadLine("radio_err", line)
        return BadLine("unexpected_line", line) if line else None


_RUI3_EVENT = re.compile(r"\+EVT:RXP2P:(?P<rssi>-?[0-9]{1,4}):(?P<snr>-?[0-9]{1,4}):(?P<hex>[0-9A-Fa-f]*)")
_OLD_EVENT = re.compile(r"\+EVT:RXP2P,\s*RSSI\s*(?P<rssi>-?[0-9]{1,4}),\s*SNR\s*(?P<snr>-?[0-9]{1,4})")


class RAK3172(Modem):
    ok_replies = ("OK",)

    async def setup(self) -> None:
        c = self.config
        await self.command("AT")
        await self.command("AT+NWM=0")  # P2P mode (a RUI3 module restarts if the mode changes)
        await self.command("AT+PRECV=0")  # stop a reception left running, else AT+P2P is busy
        params = [c.frequency, c.spreading_factor, c.bandwidth, CR_INDEX[c.coding_rate], c.preamble, c.tx_power]
        await self.command("AT+P2P=" + ":".join(str(p) for p in params))
        await self.command("AT+PRECV=65534")  # listen continuously

    def is_unsolicited(self, line: str) -> bool:
        return line.startswith("+EVT:")

    async def packets(self) -> AsyncIterator[Packet | BadLine]:
        parser = RAK3172Lines()
        while True:
            try:
                line = await self.read_line(None)
            except LineTooLong as exc:
                yield BadLine(exc.kind, "")
                continue
            item = parser.parse(line, time.time_ns())
            if item is not None:
                yield item


class RAK3172Lines:
    """RAK3172 unsolicited lines -> packets. Pure (time passed in), so it can be fuzzed."""

    def __init__(self) -> None:
        self._pending: tuple[int, int] | None = None  # RSSI/SNR of the old two-line format

    def parse(self, line: str, ts_ns: int) -> Packet | BadLine | None:
        if m := _RUI3_EVENT.fullmatch(line):
            payload = _hex(m["hex"])
            if payload is None:
                return BadLine("bad_hex", line)
            return Packet(payload, ts_ns, int(m["rssi"]), int(m["snr"]))
        if m := _OLD_EVENT.fullmatch(line):
            self._pending = (int(m["rssi"]), int(m["snr"]))
            return None
        if self._pending is not None and line.startswith("+EVT:"):
            payload = _hex(line[5:])
            rssi, snr = self._pending
            self._pending = None
            return BadLine("bad_hex", line) if payload is None else Packet(payload, ts_ns, rssi, snr)
        if line.startswith("+EVT:RXP2P"):
            return BadLine("bad_event", line)
        if line and not line.startswith("+EVT:"):
            return BadLine("unexpected_line", line)
        return None


MODEMS: dict[str, type[Modem]] = {"rn2483": RN2483, "rak3172": RAK3172}
