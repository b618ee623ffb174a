"""Read answers decoded our way (drivers/modbus/responses.py): equal to pymodbus' own decode, and wired in.

The registration goes through pymodbus' ``client.register``; the tests that read
the client's decoder tables pin it, so that a pymodbus release that changes
the extension point fails here rather than silently decoding a register at a
time again (or handing the poller something else).
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from gateway.drivers.modbus.bus import Bus, ExceptionResponse, GarbledResponse
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.responses import (
    FastCoilsResponse,
    FastDiscreteInputsResponse,
    RawHoldingRegistersResponse,
    RawInputRegistersResponse,
)
from gateway.drivers.modbus.tcp_client import ModbusTcpClient
from gateway.drivers.modbus.words import words_of
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator

PAIRS = [
    (RawHoldingRegistersResponse, ReadHoldingRegistersResponse),
    (RawInputRegistersResponse, ReadInputRegistersResponse),
]


@pytest.mark.parametrize(("ours", "reference"), PAIRS)
def test_decode_equals_pymodbus_for_every_register_count(ours: Any, reference: Any) -> None:
    rng = random.Random(7)
    for count in range(1, 126):
        body = bytes(rng.randrange(256) for _ in range(2 * count))
        for extra in (b"", b"\x00\x01"):  # an answer exactly as long, or with bytes after the byte count
            data = bytes([2 * count]) + body + extra
            ref = reference()
            ref.decode(data)
            got = ours()
            got.decode(data)
            assert got.raw == body
            assert list(got.registers) == ref.registers
            assert got.function_code == ref.function_code


@pytest.mark.parametrize(
    ("ours", "reference"),
    [(FastCoilsResponse, ReadCoilsResponse), (FastDiscreteInputsResponse, ReadDiscreteInputsResponse)],
)
def test_bits_decode_equals_pymodbus_for_every_byte_count(ours: Any, reference: Any) -> None:
    rng = random.Random(5)
    for nbytes in range(0, 251):  # up to 2000 bits, the protocol limit
        body = bytes(rng.randrange(256) for _ in range(nbytes))
        data = bytes([nbytes]) + body
        ref, got = reference(), ours()
        ref.decode(data)
        got.decode(data)
        assert got.bits == ref.bits
    got = ours()
    got.decode(bytes([2, 0x05, 0x81]))  # pymodbus' own example: least significant bit first
    assert got.bits == [True, False, True, False, False, False, False, False] + [True] + [False] * 6 + [True]


@pytest.mark.parametrize(("ours", "reference"), PAIRS)
def test_odd_and_overlong_byte_counts_behave_as_pymodbus(ours: Any, reference: Any) -> None:
    data = bytes([5, 1, 2, 3, 4, 5, 6])  # 5 bytes announced: pymodbus reads 2 registers
    ref, got = reference(), ours()
    ref.decode(data)
    got.decode(data)
    assert list(got.registers) == ref.registers == [0x0102, 0x0304]
    for bad in (bytes([6, 1, 2]), bytes([1])):  # byte count beyond the packet
        with pytest.raises(ModbusIOException):
            reference().decode(bad)
        with pytest.raises(ModbusIOException):
            ours().decode(bad)


def test_the_debug_text_pymodbus_builds_for_every_answer_does_not_decode_the_registers() -> None:
    got = RawHoldingRegistersResponse(dev_id=3, transaction_id=9)
    got.decode(bytes([4, 0x12, 0x34, 0xAB, 0xCD]))
    text = str(got)
    assert "dev_id=3" in text and "transaction_id=9" in text and "raw=1234abcd" in text
    assert got._registers is None  # str() stayed on the bytes: no list of ints built
    coils = FastCoilsResponse(dev_id=3)
    coils.decode(bytes([2, 0x05, 0x81]))
    assert str(coils) == "FastCoilsResponse(dev_id=3, transaction_id=0, bits=16, raw=0581)"  # not 16 bools


def test_built_with_registers_encodes_as_pymodbus() -> None:
    words = [0, 1, 0xFFFF, 0x1234]
    got = RawHoldingRegistersResponse(registers=words)
    assert got.raw == struct.pack(">4H", *words)
    assert got.encode() == ReadHoldingRegistersResponse(registers=words).encode()
    assert words_of(got.raw) == words


def _bus(line: dict[str, Any]) -> Bus:
    device = {"name": "d", "unit_id": 1, "profile": "xy-md02"}
    return Bus(ModbusSourceConfig.model_validate({"driver": "modbus", "name": "bus", "timeout": 1.0, **line,
                                                  "devices": [device]}))  # fmt: skip


async def test_the_client_decoder_answers_with_our_classes() -> None:
    # pymodbus' client serves the RTU framings (Modbus TCP has its own client, tcp_client.py)
    bus = _bus({"transport": "rtu_over_tcp", "host": "127.0.0.1", "port": 1})
    assert not isinstance(bus.client, ModbusTcpClient)
    decoder = bus.client.ctx.framer.decoder
    for fc, cls in ((3, RawHoldingRegistersResponse), (4, RawInputRegistersResponse)):
        pdu = decoder.decode(bytes([fc, 4, 0x12, 0x34, 0xAB, 0xCD]))
        assert type(pdu) is cls
        assert pdu.raw == b"\x12\x34\xab\xcd"
        # the RTU framer sizes a frame by the class it looks up: ours, with pymodbus' byte-count position
        assert decoder.lookupPduClass(bytes([1, fc, 4])) is cls
        assert cls.rtu_byte_count_pos == 2
    for fc, bits_cls in ((1, FastCoilsResponse), (2, FastDiscreteInputsResponse)):
        pdu = decoder.decode(bytes([fc, 1, 0x03]))
        assert type(pdu) is bits_cls
        assert pdu.bits[:3] == [True, True, False]
        assert decoder.lookupPduClass(bytes([1, fc, 1])) is bits_cls


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    devices = devices_from_profiles({1: "xy-md02"})
    devices[1].pin_random(11, registers=200, bits=300)
    simulator = ModbusSimulator(devices, seed=1)
    yield simulator
    await simulator.close()


async def _line(sim: ModbusSimulator, transport: str) -> dict[str, Any]:
    if transport == "rtu":
        return {"transport": "rtu", "port": await sim.serve_pty()}
    return {"transport": transport, "host": "127.0.0.1", "port": await sim.serve_tcp(rtu_framing=transport != "tcp")}


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp", "rtu"])
async def test_read_block_gives_the_device_registers_as_bytes(sim: ModbusSimulator, transport: str) -> None:
    bus = _bus(await _line(sim, transport))
    device = sim.devices[1]
    counts = range(1, 126) if transport == "tcp" else (1, 2, 17, 64, 124, 125)  # a serial line is slower
    try:
        await bus.connect()
        for table in ("holding", "input"):
            for count in counts:
                block = await bus.read_block(table, 1, 3, count, timeout=1.0, retries=0)
                expected = device.read(table, 3, count)
                assert expected is not None
                assert block == struct.pack(f">{count}H", *expected)
                assert await bus.read(table, 1, 3, count, timeout=1.0, retries=0) == expected
        for table in ("coil", "discrete"):
            for count in (1, 7, 8, 9, 16, 100, 255):
                bits = await bus.read_block(table, 1, 5, count, timeout=1.0, retries=0)
                expected = device.read(table, 5, count)
                assert expected is not None
                assert bits == [bool(w) for w in expected]
    finally:
        bus.close()


async def test_exceptions_and_garbled_answers_still_raise(sim: ModbusSimulator) -> None:
    bus = _bus(await _line(sim, "rtu_over_tcp"))
    try:
        await bus.connect()
        sim.fault(1).exception = 2
        with pytest.raises(ExceptionResponse) as exc:
            await bus.read_block("holding", 1, 0, 10, timeout=0.5, retries=0)
        assert exc.value.code == 2
        sim.fault(1).exception = None
        sim.fault(1).corrupt_next = 1
        with pytest.raises(GarbledResponse):
            await bus.read_block("input", 1, 0, 10, timeout=0.3, retries=0)
        assert await bus.read_block("input", 1, 0, 2, timeout=0.5, retries=0) == struct.pack(
            ">2H", *sim.devices[1].read("input", 0, 2) or []
        )
    finally:
        bus.close()
