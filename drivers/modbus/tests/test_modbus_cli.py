"""Field tools (probe, scan), the simulator CLI arguments and the demo part."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import build_config, parse_config
from gateway.drivers.modbus import cli, scan
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.demo import demo_part
from gateway.simulators.modbus import cli as sim_cli
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.harness import running_driver
from gateway.simulators.modbus.server import ModbusSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    devices = devices_from_profiles({1: "xy-md02", 4: "eastron-sdm630", 9: "xy-md02"})
    devices[1].fixed = {"input": {0x01: 0x0131, 0x02: 0x0222}}
    simulator = ModbusSimulator(devices)
    yield simulator
    await simulator.close()


async def test_probe_prints_the_table(sim: ModbusSimulator) -> None:
    port = await sim.serve_tcp()
    args = _parser().parse_args(["probe", "--tcp", f"127.0.0.1:{port}", "--unit", "1", "--profile", "xy-md02"])
    out = io.StringIO()
    assert await cli.probe_async(args, out) == 0
    text = out.getvalue()
    assert "quantity" in text.splitlines()[1] and "raw (hex)" in text
    assert "temperature  input:1  0131       30.5   Cel   ok" in text
    assert "humidity     input:2  0222       54.6   %RH   ok" in text


async def test_probe_dead_unit_exits_non_zero_with_advice(
    sim: ModbusSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await sim.serve_tcp()
    args = _parser().parse_args(
        ["probe", "--tcp", f"127.0.0.1:{port}", "--unit", "5", "--profile", "xy-md02", "--timeout", "0.1"]
    )
    assert await cli.probe_async(args, io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "unit 5 does not answer" in err and "gateway scan" in err


async def test_probe_from_config_file(sim: ModbusSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp(rtu_framing=True)
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[[sources]]\ndriver = "modbus"\nname = "line"\ntransport = "rtu_over_tcp"\nhost = "127.0.0.1"\n'
        f"port = {port}\n"
        '[[sources.devices]]\nname = "meter"\nunit_id = 4\nprofile = "eastron-sdm630"\n'
    )
    args = _parser().parse_args(["probe", "--config", str(config), "--source", "line", "--device", "meter"])
    out = io.StringIO()
    assert await cli.probe_async(args, out) == 0
    assert "meter (unit 4)" in out.getvalue() and "4 request(s)" in out.getvalue()
    assert out.getvalue().count(" ok") == 21


async def test_scan_lists_units_and_emits_a_valid_config(sim: ModbusSimulator) -> None:
    port = await sim.serve_tcp()
    sim.fault(9).exception = 2  # answers, with an exception: still present
    args = _parser().parse_args(["scan", "--tcp", f"127.0.0.1:{port}", "--units", "1-10", "--timeout", "0.05"])
    out, err = io.StringIO(), io.StringIO()
    assert await cli.scan_async(args, out, err) == 0
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["unit   1", "unit   4", "unit   9"]
    assert "scan: 10/10 unit ids tried, 3 answering" in err.getvalue()  # not a tty: plain progress lines
    args.emit_config = True
    out = io.StringIO()
    assert await cli.scan_async(args, out, io.StringIO()) == 0
    cfg = parse_config(out.getvalue(), source="emitted.toml")
    assert [d.unit_id for d in cfg.sources[0].config.devices] == [1, 4, 9]  # type: ignore[attr-defined]


async def test_scan_with_nothing_answering(sim: ModbusSimulator) -> None:
    port = await sim.serve_tcp()
    args = _parser().parse_args(["scan", "--tcp", f"127.0.0.1:{port}", "--units", "20-22"])
    assert args.timeout == 0.2  # scan's shorter default
    args.timeout = 0.05
    err = io.StringIO()
    assert await cli.scan_async(args, io.StringIO(), err) == 1
    assert "no unit answered" in err.getvalue()


def test_progress_updates_in_place_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = scan.Progress(4, stream)
    for n in range(1, 5):
        progress.update(n, n, 1)
    progress.finish()
    assert stream.getvalue().count("\r") == 4 and stream.getvalue().endswith("100%  unit   4  found 1\n")


def test_parse_units() -> None:
    assert cli.parse_units("1-3,7,5-5") == [1, 2, 3, 5, 7]
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_units("5-1")


async def test_simulator_cli_builds_units_and_faults() -> None:
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--profile", "xy-md02", "--units", "1-3", "--device", "10:eastron-sdm120", "--busy-rate", "0.5",
         "--silent-units", "2", "--tcp", "127.0.0.1:0"]
    )  # fmt: skip
    sim = sim_cli.build(args)
    assert sorted(sim.devices) == [1, 2, 3, 10]
    assert sim.fault(2).silent and not sim.fault(1).silent and sim.fault(10).busy_rate == 0.5


async def test_demo_part_serves_what_it_configures(tmp_path: Path) -> None:
    part = demo_part(tmp_path)
    assert part is not None and part.start is not None and part.stop is not None
    (rs485, tcp) = build_config({"sources": part.sources}).sources
    assert isinstance(rs485.config, ModbusSourceConfig) and isinstance(tcp.config, ModbusSourceConfig)
    await part.start()
    try:
        async with running_driver(rs485.config.model_copy(update={"interval": 0.2})) as run:
            await run.wait_for(lambda: {r.device for r in run.readings} == {"meter-hall", "climate-cabinet"})
        async with running_driver(tcp.config.model_copy(update={"interval": 0.2})) as run:
            await run.wait_for(lambda: len(run.of("meter-streetlights")) >= 13)
    finally:
        await part.stop()


@pytest.mark.parametrize("code", [4, 10, 11])
async def test_scan_counts_devices_not_a_server_answering_for_every_unit_id(code: int) -> None:
    # issue 8 item 9: a server answering every unknown unit id with an exception showed up as 247 units
    simulator = ModbusSimulator(devices_from_profiles({1: "xy-md02", 7: "xy-md02"}), unknown_unit_exception=code)
    try:
        port = await simulator.serve_tcp()
        args = _parser().parse_args(["scan", "--tcp", f"127.0.0.1:{port}", "--timeout", "0.5"])
        assert args.units == list(range(1, 248))
        out, err = io.StringIO(), io.StringIO()
        assert await cli.scan_async(args, out, err) == 0
    finally:
        await simulator.close()
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["unit   1", "unit   7"]
    text = err.getvalue()
    assert "2 unit(s) present: 1, 7" in text
    assert "present = answers holding register 0 with data, or with an exception other than 10/11" in text
    why = "as reserved unit 252 does: the endpoint answers for any unit id" if code == 4 else "a gateway's 'no device"
    assert f"Not counted: 245 answered exception {code} (" in text and why in text


async def test_scan_of_a_peer_that_is_not_modbus_says_so() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        args = _parser().parse_args(["scan", "--tcp", f"127.0.0.1:{port}", "--units", "1-3", "--timeout", "0.5"])
        out, err = io.StringIO(), io.StringIO()
        assert await cli.scan_async(args, out, err) == 2
    finally:
        server.close()
        await server.wait_closed()
    assert err.getvalue() == (
        f"error: 127.0.0.1:{port} answers, but not in Modbus TCP (got b'SSH-2.0-OpenSSH_9.2\\r\\n'); is it the right "
        "port? Modbus TCP is usually 502; a serial-to-Ethernet converter in raw mode needs --rtu-over-tcp\n"
    )
    assert out.getvalue() == ""


def test_simulator_cli_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "sim", "modbus", "--profile", "xy-md02", "--tcp", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; another program holds the port "
        f"(ss -ltnp 'sport = :{port}') or pick another --tcp port, e.g. --tcp 127.0.0.1:0 for a free one"
    )
    assert "Traceback" not in result.stderr


async def test_simulator_cli_has_the_answer_for_every_unit_mode() -> None:
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    args = parser.parse_args(["--device", "1:xy-md02", "--unknown-units-exception", "11", "--tcp", "127.0.0.1:0"])
    assert sim_cli.build(args).unknown_unit_exception == 11
