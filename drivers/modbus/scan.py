"""Find the Modbus units on a line or endpoint, and say how "present" was decided.

A unit counts as present when it answers a read of holding register 0 with data, or
with a Modbus exception that only a device gives (illegal address, device failure...).
Two kinds of answer do not count, because they come from something that answers
for *every* unit id:

- exceptions 10 and 11 (gateway path unavailable / target failed to respond): a
  TCP-to-RTU gateway saying there is no device behind it at that id;
- the answer the endpoint also gives for a reserved unit id (``CONTROL_UNIT``, 252:
  ids 248..255 are reserved on a serial line, so no device there can have it). A
  server that answers every unknown id with exception 4, say, answers 252 the same
  way, and those answers then say nothing about a device.

Before scanning a TCP endpoint, one raw request checks the peer speaks the framing
asked for (Modbus TCP or RTU frames), so a wrong port reads as that, not as
"no unit answered".
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import TextIO

from pymodbus.framer import FramerRTU

from gateway.drivers.modbus.bus import EXC_NAMES, Bus, BusUnavailable, ExceptionResponse, ModbusTransportError

CONTROL_UNIT = 252
GATEWAY_NO_DEVICE = (10, 11)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one unit id answered: data (``value``), an exception (``code``), or nothing (both None)."""

    value: int | None = None
    code: int | None = None

    @property
    def silent(self) -> bool:
        return self.value is None and self.code is None

    @property
    def kind(self) -> str:
        return "data" if self.value is not None else f"exception {self.code}" if self.code is not None else "silence"

    def __str__(self) -> str:
        if self.value is not None:
            return f"holding 0 = 0x{self.value:04X}"
        if self.code is not None:
            return f"answers exception {self.code} ({EXC_NAMES.get(self.code, 'unknown')})"
        return "no answer"


@dataclass(slots=True)
class ScanResult:
    control: Answer
    answers: dict[int, Answer] = field(default_factory=dict)

    def present(self) -> dict[int, Answer]:
        """Units that are devices, by the rules in the module docstring."""
        if self.control.value is not None:
            # one device that ignores the unit id (common on Modbus TCP): it is there once
            first = next((u for u, a in self.answers.items() if a.value is not None), None)
            return {first: self.answers[first]} if first is not None else {}
        return {
            unit: a
            for unit, a in self.answers.items()
            if not a.silent and a.code not in GATEWAY_NO_DEVICE and (self.control.silent or a.kind != self.control.kind)
        }

    def explain(self) -> str:
        """How presence was decided, in one or two lines, for the technician."""
        rule = (
            "present = answers holding register 0 with data, or with an exception other than 10/11 "
            f"(a gateway's 'no device there') and unlike reserved unit {CONTROL_UNIT}"
        )
        ignored = {u: a for u, a in self.answers.items() if not a.silent and u not in self.present()}
        if self.control.value is not None:
            return (f"{rule}.\nUnit {CONTROL_UNIT} answered with data too: the endpoint ignores the unit id, "
                    "so it is ONE device; configure it with the unit id shown.")  # fmt: skip
        if not ignored:
            return f"{rule}."
        kinds: dict[str, int] = {}
        for a in ignored.values():
            label = str(a).removeprefix("answers ")
            kinds[label] = kinds.get(label, 0) + 1
        what = ", ".join(f"{n} answered {label}" for label, n in kinds.items())
        why = (
            f"as reserved unit {CONTROL_UNIT} does: the endpoint answers for any unit id"
            if not self.control.silent
            else "a gateway's 'no device there'"
        )
        return f"{rule}.\nNot counted: {what} ({why})."


async def ask(bus: Bus, unit: int, timeout: float) -> Answer:
    try:
        words = await bus.read("holding", unit, 0, 1, timeout=timeout, retries=0)
        return Answer(value=int(words[0]))
    except ExceptionResponse as exc:
        return Answer(code=exc.code)
    except BusUnavailable:
        raise
    except ModbusTransportError:
        return Answer()


async def scan_units(bus: Bus, units: list[int], timeout: float, progress: Progress | None = None) -> ScanResult:
    result = ScanResult(control=await ask(bus, CONTROL_UNIT, timeout))
    for n, unit in enumerate(units, 1):
        result.answers[unit] = await ask(bus, unit, timeout)
        if progress:
            progress.update(n, unit, len(result.present()))
    if progress:
        progress.finish()
    return result


class Progress:
    """A progress line updated in place on a terminal, periodic plain lines otherwise (logs, CI)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self._last_line = -1

    def update(self, done: int, unit: int, found: int) -> None:
        pct = 100 * done // max(self.total, 1)
        if self.tty:
            bar = "#" * (pct // 5)
            self.stream.write(f"\r[{bar:<20}] {pct:3d}%  unit {unit:3d}  found {found}")
            self.stream.flush()
        elif pct // 10 != self._last_line or done == self.total:
            self._last_line = pct // 10
            self.stream.write(f"scan: {done}/{self.total} unit ids tried, {found} answering\n")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


# --- is the peer speaking Modbus at all? ----------------------------------------------------------------------


def _tcp_request(unit: int) -> bytes:
    return struct.pack(">HHHBBHH", 0x4757, 0, 6, unit, 3, 0, 1)


def _rtu_request(unit: int) -> bytes:
    body = struct.pack(">BBHH", unit, 3, 0, 1)
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def _is_tcp_answer(request: bytes, reply: bytes) -> bool:
    if len(reply) < 9:
        return False
    tid, proto, length, unit, fc = struct.unpack(">HHHBB", reply[:8])
    return bool(tid == 0x4757 and proto == 0 and 3 <= length <= 254 and unit == request[6] and fc & 0x7F == 3)


def _is_rtu_answer(request: bytes, reply: bytes) -> bool:
    if len(reply) < 5 or reply[0] != request[0] or reply[1] & 0x7F != 3:
        return False
    size = 5 if reply[1] & 0x80 else 5 + reply[2]
    frame = reply[:size]
    return len(frame) == size and int.from_bytes(frame[-2:], "big") == FramerRTU.compute_CRC(frame[:-2])


async def peer_problem(host: str, port: int, *, rtu_framing: bool, timeout: float) -> str | None:
    """One raw request: None if the answer is Modbus (or there is none), else what is wrong and what to try."""
    request = _rtu_request(1) if rtu_framing else _tcp_request(1)
    try:
        async with asyncio.timeout(timeout + 1.0):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return None  # the bus reports a connection failure in its own words
    try:
        writer.write(request)
        await writer.drain()
        reply = b""
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(max(timeout, 0.5)):
                while len(reply) < 260:
                    chunk = await reader.read(260)
                    if not chunk:
                        break
                    reply += chunk
                    if (_is_rtu_answer if rtu_framing else _is_tcp_answer)(request, reply):
                        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not reply:
        return None  # silence proves nothing: unit 1 may just not exist
    framing, other = ("RTU frames (--rtu-over-tcp)", "--tcp") if rtu_framing else ("Modbus TCP", "--rtu-over-tcp")
    if reply == request:
        return (f"{host}:{port} sends back every byte it gets (a loopback, or a serial server with nothing "
                "behind it): check the RS-485 side of the converter and the port number")  # fmt: skip
    return (f"{host}:{port} answers, but not in {framing} (got {reply[:24]!r}); is it the right port? "
            f"Modbus TCP is usually 502; a serial-to-Ethernet converter in raw mode needs {other}")  # fmt: skip
