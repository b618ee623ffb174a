"""Our Modbus TCP client (drivers/modbus/tcp_client.py) through Bus: values, errors, misbehaving peers, cancellation.

Values are compared with what pymodbus' own client reads from the same simulator. The misbehaving peers
(late answers, noise, hang-ups, silence) are small raw asyncio servers scripted per request.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from gateway.drivers.modbus.bus import (
    BadResponse,
    Bus,
    BusUnavailable,
    ExceptionResponse,
    GarbledResponse,
    ModbusTransportError,
    RequestTimeout,
)
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.tcp_client import ModbusTcpClient
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator
from tests.servers import free_port

DEVICE = {"name": "d", "unit_id": 1, "registers": [{"quantity": "status", "address": 0}]}


def _bus(
    port: int, on_retry: Callable[[str, int], None] | None = None, on_idle_noise: Callable[[], None] | None = None
) -> Bus:
    cfg = ModbusSourceConfig.model_validate(
        {"driver": "modbus", "name": "bus", "transport": "tcp", "host": "127.0.0.1", "port": port,
         "timeout": 1.0, "devices": [DEVICE]}
    )  # fmt: skip
    return Bus(cfg, on_retry=on_retry, on_idle_noise=on_idle_noise)


def _client(bus: Bus) -> ModbusTcpClient:
    assert isinstance(bus.client, ModbusTcpClient)
    return bus.client


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- against our simulator, compared with pymodbus' client ----------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    devices = devices_from_profiles({1: "xy-md02"})
    devices[1].pin_random(3, registers=200, bits=2100)
    simulator = ModbusSimulator(devices, seed=1)
    yield simulator
    await simulator.close()


async def test_values_equal_what_pymodbus_reads_from_the_same_simulator(sim: ModbusSimulator) -> None:
    port = await sim.serve_tcp()
    bus = _bus(port)
    reference = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    try:
        await bus.connect()
        assert await reference.connect()
        for table, read in (("holding", reference.read_holding_registers),
                            ("input", reference.read_input_registers)):  # fmt: skip
            for count in (1, 2, 3, 17, 64, 100, 124, 125):
                expected = (await read(7, count=count, device_id=1)).registers
                block = await bus.read_block(table, 1, 7, count, timeout=1.0, retries=0)
                assert block == struct.pack(f">{count}H", *expected)
                assert await bus.read(table, 1, 7, count, timeout=1.0, retries=0) == expected
        for table, read_bits in (("coil", reference.read_coils), ("discrete", reference.read_discrete_inputs)):
            for count in (1, 7, 8, 9, 16, 17, 100, 255, 2000):
                bits = (await read_bits(3, count=count, device_id=1)).bits[:count]
                assert await bus.read_block(table, 1, 3, count, timeout=1.0, retries=0) == bits
    finally:
        bus.close()
        reference.close()


async def test_exception_answers_and_busy_retries(sim: ModbusSimulator) -> None:
    retried: list[tuple[str, int]] = []
    bus = _bus(await sim.serve_tcp(), on_retry=lambda kind, unit: retried.append((kind, unit)))
    try:
        for code in (1, 2, 3, 4, 11):
            sim.fault(1).exception = code
            with pytest.raises(ExceptionResponse) as exc:
                await bus.read_block("holding", 1, 0, 10, timeout=0.5, retries=1)
            assert exc.value.code == code
        assert not retried  # only "busy" answers are retried
        sim.fault(1).exception = None
        sim.fault(1).busy_next = 1
        assert await bus.read_block("input", 1, 0, 2, timeout=0.5, retries=1) == struct.pack(
            ">2H", *sim.devices[1].read("input", 0, 2) or []
        )
        assert retried == [("device_busy", 1)]
    finally:
        bus.close()


async def test_connection_refused_is_bus_unavailable() -> None:
    bus = _bus(free_port())
    with pytest.raises(BusUnavailable, match=r"cannot open 127\.0\.0\.1"):
        await bus.connect()
    with pytest.raises(BusUnavailable):
        await bus.read_block("holding", 1, 0, 1, timeout=0.2, retries=0)
    assert not bus.connected


# --- misbehaving peers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    tid: int
    unit: int
    fc: int
    address: int
    count: int


def answer(
    req: Request,
    data: bytes,
    *,
    tid: int | None = None,
    unit: int | None = None,
    fc: int | None = None,
    byte_count: int | None = None,
) -> bytes:
    """An MBAP answer to ``req`` carrying ``data``, each header field overridable to misbehave."""
    pdu = bytes([req.fc if fc is None else fc, len(data) if byte_count is None else byte_count]) + data
    unit = req.unit if unit is None else unit
    return struct.pack(">HHHB", req.tid if tid is None else tid, 0, 1 + len(pdu), unit) + pdu


def registers(*words: int) -> bytes:
    return struct.pack(f">{len(words)}H", *words)


CLOSE = b"<close>"
Script = Callable[[int, Request], bytes | None]  # (request number, request) -> bytes to send, CLOSE, or None (silence)


@dataclass
class Peer:
    """A raw Modbus TCP server that answers request n with ``script(n, request)``; ``push`` writes at any time."""

    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _writer: asyncio.StreamWriter | None = None
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writer = writer
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                raw = await reader.readexactly(12)
                tid, _, _, unit, fc, address, count = struct.unpack(">HHHBBHH", raw)
                req = Request(tid, unit, fc, address, count)
                self.requests.append(req)
                out = self.script(len(self.requests) - 1, req)
                if out == CLOSE:
                    writer.transport.abort()
                    return
                if out:
                    writer.write(out)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or close() ended the handler: end normally so asyncio logs nothing
        finally:
            writer.close()
            self._handlers.discard(task)

    def push(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._writer is not None:
                self._writer.transport.abort()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
            await asyncio.wait({task})


@pytest.fixture
async def peers() -> AsyncIterator[Callable[[Script], Peer]]:
    made: list[Peer] = []

    def make(script: Script) -> Peer:
        made.append(Peer(script))
        return made[-1]

    yield make
    for p in made:
        await p.close()


async def test_a_late_answer_with_an_old_transaction_id_is_discarded(peers: Callable[[Script], Peer]) -> None:
    first: list[Request] = []

    def script(n: int, req: Request) -> bytes | None:
        if n == 0:
            first.append(req)
            return None  # silent until the next request: then its late answer comes first
        return answer(first[0], registers(0xDEAD)) + answer(req, registers(0x0001))

    peer = peers(script)
    bus = _bus(await peer.start())
    try:
        with pytest.raises(RequestTimeout):
            await bus.read_block("holding", 1, 0, 1, timeout=0.05, retries=0)
        assert bus.connected  # a timeout keeps the connection
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [0x0001]
        assert _client(bus).discarded == 1
        assert peer.connections == 1
        assert peer.requests[0].tid != peer.requests[1].tid
    finally:
        bus.close()


async def test_a_silent_peer_times_out_and_the_connection_stays(peers: Callable[[Script], Peer]) -> None:
    peer = peers(lambda n, req: None if n < 2 else answer(req, registers(n)))
    retried: list[tuple[str, int]] = []
    bus = _bus(await peer.start(), on_retry=lambda kind, unit: retried.append((kind, unit)))
    try:
        with pytest.raises(RequestTimeout, match=r"unit 1: no answer within 0\.03s"):
            await bus.read_block("holding", 1, 0, 1, timeout=0.03, retries=1)
        assert retried == [("timeout", 1)]  # the first attempt was retried, then the timeout raised
        assert bus.connected
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [2]
        assert peer.connections == 1
    finally:
        bus.close()


async def test_each_request_gets_its_own_timeout_on_a_connection(peers: Callable[[Script], Peer]) -> None:
    # One timer serves the connection (tcp_client._Connection._check): a shorter timeout after a long one
    # must fire on time, and a longer one after a short one must not fire early.
    held: list[Request] = []

    def script(n: int, req: Request) -> bytes | None:
        if n in (1, 3):
            held.append(req)
            return None
        return answer(req, registers(n))

    peer = peers(script)
    bus = _bus(await peer.start())
    try:
        assert await bus.read("holding", 1, 0, 1, timeout=30.0, retries=0) == [0]  # arms the timer for +30 s
        async with asyncio.timeout(10):  # a guard against waiting the 30 s, not a measurement
            with pytest.raises(RequestTimeout):
                await bus.read_block("holding", 1, 0, 1, timeout=0.05, retries=0)
        assert await bus.read("holding", 1, 0, 1, timeout=0.05, retries=0) == [2]  # arms it for +0.05 s
        task = asyncio.create_task(bus.read("holding", 1, 0, 1, timeout=30.0, retries=0))
        await _until(lambda: len(held) == 2)
        await asyncio.sleep(0.2)  # past the short deadline the timer was armed for
        peer.push(answer(held[1], registers(0x0004)))
        assert await task == [0x0004]  # the long request was not timed out by the short one's timer
    finally:
        bus.close()


async def test_noise_then_an_answer_resynchronises_and_retries(peers: Callable[[Script], Peer]) -> None:
    noise = b"\x13\x37\xff\xfe\x00\x10garbage on the line"

    def script(n: int, req: Request) -> bytes | None:
        return noise + answer(req, registers(0x0BAD)) if n == 0 else answer(req, registers(0x0600D))

    peer = peers(script)
    retried: list[tuple[str, int]] = []
    bus = _bus(await peer.start(), on_retry=lambda kind, unit: retried.append((kind, unit)))
    try:
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=1) == [0x600D]
        assert retried == [("bad_crc", 1)]
        assert _client(bus).resyncs == 1
        assert bus.connected
    finally:
        bus.close()


async def test_noise_fails_the_request_in_flight_and_noise_while_idle_is_dropped(
    peers: Callable[[Script], Peer],
) -> None:
    peer = peers(lambda n, req: b"\x00\x01\x00\x07" + bytes(20) if n == 0 else answer(req, registers(n)))
    idle_noise: list[int] = []
    bus = _bus(await peer.start(), on_idle_noise=lambda: idle_noise.append(1))
    client = _client(bus)
    try:
        with pytest.raises(GarbledResponse, match="not a Modbus TCP frame"):
            await bus.read_block("holding", 1, 0, 1, timeout=1.0, retries=0)
        assert not idle_noise  # the failed read is what counts that one (bad_crc)
        peer.push(b"\xff" * 9)  # no request in flight: nothing fails, so the driver's hook counts it
        await _until(lambda: client.resyncs == 2)
        assert idle_noise == [1]
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [1]
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (lambda req: answer(req, registers(1), unit=9), BadResponse, "the answer came from unit 9"),
        (lambda req: answer(req, registers(1), fc=4), BadResponse, "function code 4 answered function code 3"),
        (lambda req: answer(req, registers(1), fc=0x84), BadResponse, "function code 132"),
        (lambda req: answer(req, registers(1, 2), byte_count=6), GarbledResponse, "byte count 6"),
        (lambda req: answer(req, registers(1)), BadResponse, "asked for 2 values, got 1"),
        (lambda req: answer(req, registers(1, 2, 3)[:3]), BadResponse, "asked for 2 values, got 1"),
    ],
    ids=["other unit", "other function", "other function's exception", "byte count", "short", "odd"],
)
async def test_answers_that_do_not_fit_the_request(
    peers: Callable[[Script], Peer], reply: Callable[[Request], bytes], error: type[Exception], message: str
) -> None:
    peer = peers(lambda n, req: reply(req) if n == 0 else answer(req, registers(7, 8)))
    bus = _bus(await peer.start())
    try:
        with pytest.raises(error, match=message):
            await bus.read_block("holding", 1, 0, 2, timeout=1.0, retries=0)
        assert await bus.read("holding", 1, 0, 2, timeout=1.0, retries=0) == [7, 8]  # the connection is fine
    finally:
        bus.close()


async def test_an_answer_longer_than_asked_is_cut_to_the_count(peers: Callable[[Script], Peer]) -> None:
    peer = peers(lambda n, req: answer(req, registers(1, 2, 3)) if req.fc == 3 else answer(req, b"\xff\x01"))
    bus = _bus(await peer.start())
    try:
        assert await bus.read("holding", 1, 0, 2, timeout=1.0, retries=0) == [1, 2]
        assert await bus.read("coil", 1, 0, 3, timeout=1.0, retries=0) == [True, True, True]
    finally:
        bus.close()


async def test_a_hang_up_mid_request_is_bus_unavailable_and_the_next_read_reconnects(
    peers: Callable[[Script], Peer],
) -> None:
    peer = peers(lambda n, req: CLOSE if n == 0 else answer(req, registers(42)))
    bus = _bus(await peer.start())
    try:
        with pytest.raises(BusUnavailable, match="connection lost"):
            await bus.read_block("holding", 1, 0, 1, timeout=1.0, retries=1)
        assert not bus.connected
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [42]
        assert peer.connections == 2
    finally:
        bus.close()


async def test_a_cancelled_read_propagates_and_leaves_the_client_usable(peers: Callable[[Script], Peer]) -> None:
    first: list[Request] = []

    def script(n: int, req: Request) -> bytes | None:
        if n == 0:
            first.append(req)
            return None  # answered late, after the cancellation
        return answer(req, registers(0x0002))

    peer = peers(script)
    bus = _bus(await peer.start())
    try:
        task = asyncio.create_task(bus.read_block("holding", 1, 0, 1, timeout=5.0, retries=0))
        await _until(lambda: len(peer.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        peer.push(answer(first[0], registers(0xDEAD)))  # the late answer arrives while idle...
        await _until(lambda: _client(bus).discarded == 1)
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [0x0002]  # ...and is not taken
        assert peer.connections == 1
    finally:
        bus.close()


async def test_a_cancelled_read_whose_late_answer_comes_with_the_next_one(peers: Callable[[Script], Peer]) -> None:
    first: list[Request] = []

    def script(n: int, req: Request) -> bytes | None:
        if n == 0:
            first.append(req)
            return None
        return answer(first[0], registers(0xDEAD)) + answer(req, registers(0x0003))

    peer = peers(script)
    bus = _bus(await peer.start())
    try:
        task = asyncio.create_task(bus.read_block("holding", 1, 0, 1, timeout=5.0, retries=0))
        await _until(lambda: len(peer.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await bus.read("holding", 1, 0, 1, timeout=1.0, retries=0) == [0x0003]
    finally:
        bus.close()


# --- any bytes from the peer: a typed outcome, never a crash ---------------------------------------------------


async def _read_against(payload: bytes) -> tuple[list[object], list[dict[str, Any]]]:
    """Three reads from a peer that sends ``payload`` before its second answer."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def script(n: int, req: Request) -> bytes:
        if n == 1:
            return payload + answer(req, registers(3, 4))
        return answer(req, registers(1, 2) if n == 0 else registers(5, 6))

    peer = Peer(script)
    client = ModbusTcpClient("127.0.0.1", await peer.start())
    outcomes: list[object] = []
    try:
        await client.connect(1.0)
        for _ in range(3):
            try:
                outcomes.append(await client.read(1, 3, 0, 2, 0.05))
            except ModbusTransportError as exc:
                outcomes.append(type(exc))
        return outcomes, errors
    finally:
        client.close()
        await peer.close()


# The pieces a hostile stream is made of: noise, MBAP headers announcing any length (a frame cut short or one
# that swallows the next answer), and well-formed frames of any content, some with the transaction id of the
# request in flight (2: the second request on the connection).
_NOISE = st.binary(max_size=12)
_HEADERS = st.builds(lambda tid, length: struct.pack(">HHH", tid, 0, length), st.integers(0, 3), st.integers(0, 40))
_FRAMES = st.builds(
    lambda tid, unit, fc, data: struct.pack(">HHHBB", tid, 0, 2 + len(data), unit, fc) + data,
    st.one_of(st.just(2), st.integers(0, 0xFFFF)),
    st.sampled_from([1, 2, 0]),
    st.sampled_from([3, 4, 0x83, 1, 0]),
    st.binary(max_size=20),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_NOISE, _HEADERS, _FRAMES), max_size=5).map(b"".join))
def test_any_bytes_from_the_peer_give_a_typed_outcome_never_a_crash(payload: bytes) -> None:
    outcomes, errors = asyncio.run(_read_against(payload))
    assert not errors  # nothing escaped into the event loop: data_received never raised
    assert outcomes[0] == registers(1, 2)
    for outcome in outcomes[1:]:  # the payload may hold a frame for the request in flight: any bytes then
        assert isinstance(outcome, bytes) or (isinstance(outcome, type) and issubclass(outcome, ModbusTransportError))
    assert isinstance(outcomes[2], bytes) or outcomes[2] is not BusUnavailable  # the connection survived


def test_a_modbus_tcp_gateway_never_loads_pymodbus() -> None:
    # pymodbus is for the serial framings: a TCP-only gateway is spared its 2.6 MiB and ~25 ms of start-up.
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "import gateway.daemon, gateway.sinks.mqtt, gateway.drivers.modbus.driver\n"
        "from gateway.drivers.modbus.bus import Bus\n"
        "from gateway.drivers.modbus.config import ModbusSourceConfig\n"
        "def bus(transport, **where):\n"
        "    async def make():\n"
        "        device = {'name': 'm', 'unit_id': 1, 'profile': 'xy-md02'}\n"
        "        return Bus(ModbusSourceConfig.model_validate(\n"
        "            {'driver': 'modbus', 'name': 'b', 'transport': transport, 'devices': [device], **where}))\n"
        "    return asyncio.run(make())\n"
        "bus('tcp', host='127.0.0.1', port=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pymodbus'))[:1])\n"
        "bus('rtu_over_tcp', host='127.0.0.1', port=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pymodbus'))[:1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "['pymodbus']"]
