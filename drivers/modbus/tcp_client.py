"""A lean Modbus TCP (MBAP) client for the poll hot path: read functions 1 to 4, one transaction at a time.

Why not pymodbus' ``AsyncModbusTcpClient`` (still used for RTU and RTU over
TCP, and by the simulators): its request path (transaction manager, a
``wait_for`` per request, framer, PDU decoder, a PDU object per answer) cost
95-180 us of CPU per read of 100 holding registers, against 42-75 us for this
module (``bench/bench_modbus_client.py``, 50 connections in parallel on
loopback, three runs on a shared 2-core VM; most of what is left is the event
loop and the loopback TCP stack). At 100 devices x 100 registers polled every
second pymodbus' request path was ~15 % of the daemon's CPU; with this client
the daemon went from 7.6 to 7.0 us per delivered value (4.2 to 3.6 at 100 x
500, ``bench/bench_load.py``, one run each). Here a request is one
``struct.pack``, one write and one future, timed out by one timer per
connection that is re-armed lazily (``_Connection._check``); an answer is one
``struct.unpack_from`` of the MBAP header and one slice for the data.

What it keeps of the protocol, and how it fails (``errors.py``):

- every request gets the next transaction id; a frame with another one (the
  late answer to a request that timed out or was cancelled) is discarded;
- an answer from another unit id or with another function code is a
  ``BadResponse``; ``fc | 0x80`` is an ``ExceptionResponse(code)``; a byte
  count beyond the frame is a ``GarbledResponse``;
- bytes that cannot be an MBAP header (protocol id not 0, length out of
  range) are noise: the buffer is dropped (counted in ``resyncs``) and the
  request waiting, if any, fails with ``GarbledResponse`` (retried by ``Bus``);
- no answer in time is a ``RequestTimeout`` and the connection stays open; a
  refused, timed-out or lost connection is ``BusUnavailable``, and the next
  ``connect`` opens a new one (the bus scheduler owns the backoff);
- a cancelled read forgets its request, so the next one cannot take its late
  answer, and the cancellation propagates (nothing here catches it for good).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

from gateway.drivers.modbus.errors import (
    BadResponse,
    BusUnavailable,
    ExceptionResponse,
    GarbledResponse,
    RequestTimeout,
)

# transaction id, protocol id (0), length (6: unit, function code, address, count), unit, function code, address, count
_REQUEST = struct.Struct(">HHHBBHH")
# transaction id, protocol id, length (unit id + PDU), unit, function code
_HEADER = struct.Struct(">HHHBB")
_HEADER_SIZE = 8  # the MBAP header (7) and the function code
_MIN_LENGTH = 2  # unit id and function code
_MAX_LENGTH = 254  # unit id and a PDU of at most 253 bytes (the Modbus limit)

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class _Connection(asyncio.Protocol):
    """One TCP connection: parses MBAP frames as they arrive and resolves the one request in flight."""

    def __init__(self, client: ModbusTcpClient) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = b""
        self._tid = 0
        # the request in flight: its future (None when idle), unit, function code, deadline and timeout
        self._future: asyncio.Future[bytes] | None = None
        self._unit = 0
        self._fc = 0
        self._deadline = 0.0
        self._timeout = 0.0
        # One timer per connection, armed for the earliest deadline and re-armed lazily when it fires (see _check)
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: other event loops' transports (uvloop's) are not subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._buffer = b""
        self._cancel_timer()
        self._fail(BusUnavailable(f"{self._client.endpoint}: connection lost{f' ({exc})' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        pos = 0
        while size - pos >= _HEADER_SIZE:
            tid, protocol, length, unit, fc = _HEADER.unpack_from(buf, pos)
            if protocol or not _MIN_LENGTH <= length <= _MAX_LENGTH:
                self._resync(buf[pos : pos + _HEADER_SIZE])
                return
            end = pos + 6 + length
            if end > size:
                break  # the rest of the frame is still on its way
            if tid == self._tid and self._future is not None:
                self._answer(buf, pos, end, unit, fc)
            else:
                self._client.discarded += 1  # a late answer to a request that timed out or was cancelled
            pos = end
        self._buffer = buf[pos:] if pos else buf

    # --- requests -----------------------------------------------------------------------------------------

    async def request(self, unit: int, fc: int, address: int, count: int, timeout: float) -> bytes:
        transport = self.transport
        if transport is None or self.closed:
            raise BusUnavailable(f"{self._client.endpoint}: not connected")
        if self._future is not None:
            raise RuntimeError("one Modbus TCP transaction at a time on a connection (Bus holds a lock)")
        tid = self._tid = self._tid + 1 if self._tid < 0xFFFF else 1
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._future = future
        self._unit, self._fc = unit, fc
        transport.write(_REQUEST.pack(tid, 0, 6, unit, fc, address, count))
        deadline = self._deadline = self._loop.time() + timeout
        self._timeout = timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check, deadline)
        try:
            return await future
        except asyncio.CancelledError:
            # Forget the request: its late answer is then discarded, and the next request may start.
            if self._future is future:
                self._future = None
            raise

    def _answer(self, buf: bytes, pos: int, end: int, unit: int, fc: int) -> None:
        future = self._future
        assert future is not None
        self._future = None
        if future.done():
            return
        data_at = pos + _HEADER_SIZE
        if unit != self._unit:
            future.set_exception(BadResponse(f"unit {self._unit}: the answer came from unit {unit}"))
        elif fc == self._fc:
            # byte count, then the data; bytes after the announced count are ignored (as pymodbus does)
            nbytes = buf[data_at] if end > data_at else -1
            if nbytes < 0 or data_at + 1 + nbytes > end:
                future.set_exception(
                    GarbledResponse(
                        f"unit {unit}: byte count {nbytes} does not fit a frame of {end - data_at} bytes after the "
                        "function code"
                    )
                )
            else:
                future.set_result(buf[data_at + 1 : data_at + 1 + nbytes])
        elif fc == self._fc | 0x80 and end > data_at:
            future.set_exception(ExceptionResponse(buf[data_at]))
        else:
            future.set_exception(BadResponse(f"unit {unit}: function code {fc} answered function code {self._fc}"))

    def _check(self, armed_for: float) -> None:
        """The timer fired: time out the request in flight if this was its deadline, else re-arm for it.

        Most answers come long before the timeout, so arming and cancelling a timer per request (a
        TimerHandle and two heap operations each) would mostly be wasted; this timer fires about once per
        timeout while the connection is busy, and not at all once it is idle.
        """
        self._timer = None
        future = self._future
        if future is None:
            return
        if self._deadline > armed_for:  # a later request: wait for its own deadline
            self._timer = self._loop.call_at(self._deadline, self._check, self._deadline)
            return
        self._future = None
        if not future.done():
            future.set_exception(RequestTimeout(f"unit {self._unit}: no answer within {self._timeout:g}s"))

    def _resync(self, head: bytes) -> None:
        """Bytes that are no MBAP header: drop what is buffered; the request in flight, if any, failed."""
        self._buffer = b""
        self._client.resyncs += 1
        if self._future is None:
            self._client.on_idle_noise()
        self._fail(
            GarbledResponse(f"unit {self._unit}: not a Modbus TCP frame ({head.hex()}...); stream resynchronised")
        )

    def _fail(self, exc: Exception) -> None:
        future = self._future
        if future is None:
            return
        self._future = None
        if not future.done():
            future.set_exception(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
        self._fail(BusUnavailable(f"{self._client.endpoint}: connection closed"))


class ModbusTcpClient:
    """Reads coils, discrete inputs, holding and input registers from one Modbus TCP endpoint.

    ``read`` returns the answer's data bytes (after the byte count): register
    bytes big-endian as sent, or the packed bits. Not safe for concurrent reads:
    the caller runs one transaction at a time (``Bus`` holds a lock).
    """

    def __init__(self, host: str, port: int, *, on_idle_noise: Callable[[], None] | None = None) -> None:
        self.host = host
        self.port = port
        self.endpoint = f"{host}:{port}"
        self._conn: _Connection | None = None
        self.resyncs = 0  # times noise on the stream made us drop the buffer
        self.discarded = 0  # well-formed frames that answered no request in flight (late answers)
        # Noise with no read in flight fails no request, so nothing else would count it: the driver does.
        self.on_idle_noise = on_idle_noise or (lambda: None)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def connect(self, timeout: float) -> None:
        """Open the connection (no-op if open); ``BusUnavailable`` if refused or not open within ``timeout``."""
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError as exc:
            raise BusUnavailable(f"cannot open {self.endpoint}: no connection within {timeout:g}s") from exc
        except OSError as exc:
            raise BusUnavailable(f"cannot open {self.endpoint}: {exc}") from exc
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def read(self, unit: int, fc: int, address: int, count: int, timeout: float) -> bytes:
        """One request; raises the typed errors of ``errors.py``."""
        conn = self._conn
        if conn is None:
            raise BusUnavailable(f"{self.endpoint}: not connected")
        return await conn.request(unit, fc, address, count, timeout)
