"""A Modbus responder for tests and demos: TCP, RTU over TCP and RTU on a pty, with fault knobs.

Why not pymodbus' server: the fault knobs need to act between decoding a
request and writing the answer (answer nothing, answer late, flip a CRC byte,
hang up the connection), and pymodbus' server only offers a datastore hook
(``SimDevice.action``) that can return an exception code but cannot withhold,
delay or corrupt the frame. So this is a small responder on asyncio that
still uses pymodbus' framers (RTU CRC, MBAP header) and PDU classes for the
wire format; tests also run the driver against pymodbus' own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from gateway.simulators.modbus.device import SimulatedDevice

_TABLES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_RESPONSES: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}


@dataclass
class Faults:
    """Fault knobs of one unit. ``*_next`` counters apply to the next N requests; rates are 0..1 per request."""

    silent: bool = False  # never answer (a dead or unplugged device)
    exception: int | None = None  # answer every request with this exception code
    exception_addresses: set[int] = field(default_factory=set)  # exception 2 if a read covers one of them
    busy_next: int = 0  # answer "device busy" (code 6) this many times
    timeout_next: int = 0  # swallow this many requests
    corrupt_next: int = 0  # send this many answers with a broken CRC
    delay_s: float = 0.0  # answer this late
    timeout_rate: float = 0.0
    busy_rate: float = 0.0
    corrupt_rate: float = 0.0


@dataclass
class SimStats:
    requests: int = 0
    answered: int = 0
    per_unit: dict[int, int] = field(default_factory=dict)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ModbusSimulator:
    """Serves ``devices`` (unit id -> device). Start with ``serve_tcp`` and/or ``serve_pty``."""

    def __init__(
        self, devices: dict[int, SimulatedDevice], *, seed: int | None = None, unknown_unit_exception: int | None = None
    ) -> None:
        self.devices = devices
        # A server (or TCP-to-RTU gateway) that answers unit ids it has no device for with this exception
        # code (4, or a gateway's 10/11) instead of staying silent as a serial device would.
        self.unknown_unit_exception = unknown_unit_exception
        self.faults: dict[int, Faults] = {u: Faults() for u in devices}
        self.stats = SimStats()
        self._rng = random.Random(seed)
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._pty_fds: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.pty_path = ""
        self._pty_master = -1

    def fault(self, unit: int) -> Faults:
        return self.faults.setdefault(unit, Faults())

    # --- request handling ----------------------------------------------------

    def _respond(self, pdu: ModbusPDU) -> tuple[ModbusPDU | None, bool, float]:
        """(answer or None for silence, corrupt the frame?, delay)."""
        self.stats.requests += 1
        unit = pdu.dev_id
        self.stats.per_unit[unit] = self.stats.per_unit.get(unit, 0) + 1
        device = self.devices.get(unit)
        f = self.faults.get(unit, Faults())
        if device is None and self.unknown_unit_exception is not None and not f.silent:
            answer: ModbusPDU = ExceptionResponse(pdu.function_code, self.unknown_unit_exception)
            answer.dev_id, answer.transaction_id = pdu.dev_id, pdu.transaction_id
            self.stats.answered += 1
            return answer, False, 0.0
        if device is None or f.silent:
            return None, False, 0.0
        if f.timeout_next > 0:
            f.timeout_next -= 1
            return None, False, 0.0
        if f.timeout_rate and self._rng.random() < f.timeout_rate:
            return None, False, 0.0
        corrupt = False
        if f.corrupt_next > 0:
            f.corrupt_next -= 1
            corrupt = True
        elif f.corrupt_rate and self._rng.random() < f.corrupt_rate:
            corrupt = True
        answer = self._answer(pdu, device, f)
        answer.dev_id, answer.transaction_id = pdu.dev_id, pdu.transaction_id
        self.stats.answered += 1
        return answer, corrupt, f.delay_s

    def _answer(self, pdu: ModbusPDU, device: SimulatedDevice, f: Faults) -> ModbusPDU:
        fc = pdu.function_code
        if fc not in _TABLES:
            return ExceptionResponse(fc, 1)
        if f.exception is not None:
            return ExceptionResponse(fc, f.exception)
        if f.busy_next > 0:
            f.busy_next -= 1
            return ExceptionResponse(fc, 6)
        if f.busy_rate and self._rng.random() < f.busy_rate:
            return ExceptionResponse(fc, 6)
        if f.exception_addresses & set(range(pdu.address, pdu.address + pdu.count)):
            return ExceptionResponse(fc, 2)
        words = device.read(_TABLES[fc], pdu.address, pdu.count)
        if words is None:
            return ExceptionResponse(fc, 2)
        if fc in (1, 2):
            return _RESPONSES[fc](bits=[bool(w) for w in words])
        return _RESPONSES[fc](registers=words)

    async def _serve_stream(
        self, framer: FramerBase, read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], None]
    ) -> None:
        buffer = b""
        while True:
            data = await read()
            if not data:
                return
            buffer += data
            while buffer:
                try:
                    used, pdu = framer.handleFrame(buffer, 0, 0)
                except Exception:  # garbage on the line: drop it like a real device would
                    buffer = b""
                    break
                buffer = buffer[used:]
                if pdu is None:
                    break
                answer, corrupt, delay = self._respond(pdu)
                if answer is None:
                    continue
                if delay:
                    await asyncio.sleep(delay)
                frame = framer.buildFrame(answer)
                if corrupt:
                    frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
                write(frame)

    # --- TCP (MBAP) and RTU over TCP ------------------------------------------

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, rtu_framing: bool = False) -> int:
        """Listen on host:port (0 = a free port). Returns the port."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            framer: FramerBase = FramerRTU(DecodePDU(True)) if rtu_framing else FramerSocket(DecodePDU(True))
            try:
                await self._serve_stream(framer, lambda: reader.read(512), writer.write)
            except (ConnectionError, OSError):
                pass
            except asyncio.CancelledError:
                # close() cancels handlers; ending normally keeps asyncio's
                # stream callback from logging the cancellation as an error
                pass
            finally:
                self._writers.discard(writer)
                writer.close()
                if task is not None:
                    self._tasks.discard(task)

        server = await asyncio.start_server(handle, host, port)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    def disconnect_clients(self) -> int:
        """Hang up every TCP connection (a gateway reboot, a cable pulled). Returns how many."""
        n = len(self._writers)
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        return n

    # --- RTU on a pty pair -----------------------------------------------------

    async def serve_pty(self) -> str:
        """Open a pty pair, serve RTU on the master; returns the path the driver opens."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before the driver's pyserial sets raw mode
        self._pty_master = master
        self._pty_fds += [master, slave]
        self.pty_path = os.ttyname(slave)
        loop = asyncio.get_running_loop()
        os.set_blocking(master, False)

        async def read() -> bytes:
            while True:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(master, _resolve, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(master)
                try:
                    return os.read(master, 512)
                except BlockingIOError:
                    continue
                except OSError:  # EIO while the other end is being reopened
                    await asyncio.sleep(0.01)

        def write(frame: bytes) -> None:
            with contextlib.suppress(OSError):
                os.write(master, frame)

        task = asyncio.create_task(self._serve_stream(FramerRTU(DecodePDU(True)), read, write), name="modbus-sim-pty")
        self._tasks.add(task)
        return self.pty_path

    async def close(self) -> None:
        self.disconnect_clients()
        for s in self._servers:
            s.close()
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self._servers.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._pty_master >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pty_master)
        for fd in self._pty_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pty_fds.clear()
        self._pty_master = -1
