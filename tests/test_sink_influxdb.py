"""The influxdb sink against a real VictoriaMetrics and a raw HTTP server on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pytest

from gateway import plugins
from gateway.config import ConfigError, build_config
from gateway.encoding import LineProtocolEncoder
from gateway.frame import Frame, FrameFields, as_readings
from gateway.model import Quality
from gateway.sink import Outcome
from gateway.sinks import influxdb as influxdb_sink
from gateway.sinks.influxdb import InfluxDBSink, InfluxDBSinkConfig, retry_after_seconds
from tests.sample import T0, reading, send_once
from tests.servers import VictoriaMetrics, free_port

TOKEN = "s3cr3t-t0ken-do-not-log"


def make_sink(url: str, **kw: object) -> InfluxDBSink:
    cfg = InfluxDBSinkConfig.model_validate({"type": "influxdb", "url": url, "bucket": "b", "org": "o", **kw})
    return InfluxDBSink(cfg, site="lab", gateway="gw1")


def series(victoria: VictoriaMetrics, device: str) -> dict[str, object]:
    found = victoria.export(f'{{__name__="temperature_value",device="{device}"}}')
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("use_gzip", [True, False])
async def test_points_are_stored_with_exact_values_timestamps_and_tags(
    victoria: VictoriaMetrics, use_gzip: bool
) -> None:
    sink = make_sink(victoria.url, gzip=use_gzip)
    await sink.open()
    batch = [reading(i, device=f"dev-{use_gzip}") for i in range(5)]
    batch.append(reading(5, device=f"dev-{use_gzip}", tags={"probe": "ext ernal", "site": "forged"}))
    batch.append(reading(6, device=f"dev-{use_gzip}", quality=Quality.BAD, value=99))
    try:
        assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()

    plain = victoria.export(f'{{__name__="temperature_value",device="dev-{use_gzip}",probe=""}}')
    assert len(plain) == 1
    assert plain[0]["metric"] == {
        "__name__": "temperature_value", "site": "lab", "gateway": "gw1", "device": f"dev-{use_gzip}", "unit": "Cel",
    }  # fmt: skip
    assert plain[0]["values"] == [20.0, 20.25, 20.5, 20.75, 21.0, 99.0]
    assert plain[0]["timestamps"] == [(T0 + i * 10_000_000_000) // 1_000_000 for i in (0, 1, 2, 3, 4, 6)]

    tagged = victoria.export(f'{{__name__="temperature_value",device="dev-{use_gzip}",probe!=""}}')
    assert tagged[0]["metric"]["probe"] == "ext ernal"  # type: ignore[index]
    assert tagged[0]["metric"]["site"] == "lab"  # type: ignore[index]
    assert tagged[0]["metric"]["tag_site"] == "forged"  # type: ignore[index]
    assert tagged[0]["values"] == [21.25]

    quality = victoria.export(f'{{__name__="temperature_quality",device="dev-{use_gzip}"}}')
    assert quality[0]["values"] == [2.0]
    assert quality[0]["timestamps"] == [(T0 + 60_000_000_000) // 1_000_000]


async def test_bools_and_ints_share_the_float_field(victoria: VictoriaMetrics) -> None:
    sink = make_sink(victoria.url)
    await sink.open()
    batch = [
        reading(0, quantity="occupancy", unit="/", value=True),
        reading(1, quantity="occupancy", unit="/", value=False),
        reading(2, quantity="occupancy", unit="/", value=1),
    ]
    try:
        assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()
    [found] = victoria.export('{__name__="occupancy_value"}')
    assert found["values"] == [1.0, 0.0, 1.0]


async def test_dead_server_is_retry_then_accepted_after_restart(victoria: VictoriaMetrics) -> None:
    sink = make_sink(victoria.url, timeout="3s")
    victoria.stop()
    await sink.open()  # must not raise with the server down
    try:
        result = await sink.send([reading(0, device="dead")])
        assert result.outcome is Outcome.RETRY
        assert "cannot reach" in result.detail
        victoria.start()
        assert (await sink.send([reading(0, device="dead")])).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()
    assert series(victoria, "dead")["values"] == [20.0]


async def test_nothing_listening_is_retry() -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}")
    await sink.open()
    try:
        assert (await sink.send([reading(0)])).outcome is Outcome.RETRY
    finally:
        await sink.close()


async def test_nan_is_rejected_so_the_core_can_dead_letter_it(victoria: VictoriaMetrics) -> None:
    sink = make_sink(victoria.url)
    result = await send_once(sink, [reading(0), reading(1, value=float("nan"))])
    assert result.outcome is Outcome.REJECTED
    assert "NaN" in result.detail


# --- a raw HTTP server answering what we tell it ------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawServer:
    answer: Answer
    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode().split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((request_line, headers, body))
                a = self.answer
                extra = "".join(f"{k}: {v}\r\n" for k, v in a.headers.items())
                writer.write(
                    f"HTTP/1.1 {a.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(a.body)}\r\n{extra}\r\n".encode()
                    + a.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer(Answer(204))
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield server
        srv.close()


@pytest.mark.parametrize(
    ("answer", "outcome", "retry_after", "detail"),
    [
        (Answer(400, b'{"code":"invalid","message":"unable to parse \'x y\': bad timestamp"}'),
         Outcome.REJECTED, None, "HTTP 400: unable to parse 'x y': bad timestamp"),
        (Answer(422, b'{"message":"points beyond retention policy"}'), Outcome.REJECTED, None,
         "HTTP 422: points beyond retention policy"),
        (Answer(413, b'{"message":"request too large"}'), Outcome.TOO_LARGE, None, "HTTP 413"),
        (Answer(429, b"{}", {"Retry-After": "7"}), Outcome.RETRY, 7.0, "HTTP 429"),
        (Answer(503, b"", {"Retry-After": "2"}), Outcome.RETRY, 2.0, "HTTP 503"),
        (Answer(500, b'{"message":"internal error"}'), Outcome.RETRY, None, "HTTP 500: internal error"),
        (Answer(401, b'{"message":"unauthorized access"}'), Outcome.AUTH, None, "HTTP 401: unauthorized access"),
        (Answer(403, b'{"message":"forbidden"}'), Outcome.AUTH, None, "HTTP 403"),
        (Answer(404, b'{"message":"bucket \\"b\\" not found"}'), Outcome.AUTH, None, 'bucket "b" not found'),
    ],
)  # fmt: skip
async def test_http_answers_are_classified(
    raw_server: RawServer,
    answer: Answer,
    outcome: Outcome,
    retry_after: float | None,
    detail: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("INFLUX_TOKEN_T", TOKEN)
    raw_server.answer = answer
    sink = make_sink(f"http://127.0.0.1:{raw_server.port}", token_env="INFLUX_TOKEN_T", gzip=False)
    result = await send_once(sink, [reading(0), reading(1)])
    assert result.outcome is outcome
    assert result.retry_after_s == retry_after
    assert detail in result.detail
    request_line, headers, body = raw_server.requests[0]
    assert request_line.startswith("POST /api/v2/write?")
    assert "precision=ns" in request_line and "bucket=b" in request_line
    assert headers["authorization"] == f"Token {TOKEN}"  # the token is sent...
    assert body.decode().splitlines()[0].startswith("temperature,device=th-1,gateway=gw1,site=lab,unit=Cel value=20.0 ")
    assert TOKEN not in caplog.text  # ...but never logged
    assert TOKEN not in str(sink.status()) and TOKEN not in repr(sink.config)


async def test_gzip_body_and_long_server_messages_are_truncated(raw_server: RawServer) -> None:
    raw_server.answer = Answer(400, b'{"message":"' + b"x" * 5000 + b'"}')
    sink = make_sink(f"http://127.0.0.1:{raw_server.port}", gzip=True)
    result = await send_once(sink, [reading(0)])
    assert result.outcome is Outcome.REJECTED
    assert len(result.detail) < 400
    _, headers, body = raw_server.requests[0]
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).decode() == f"temperature,device=th-1,gateway=gw1,site=lab,unit=Cel value=20.0 {T0}"


@pytest.mark.parametrize(
    ("level", "xfl"), [(None, 0 if influxdb_sink.GZIP_LIBRARY == "zlib-ng" else 4), (1, 4), (9, 2)]
)
async def test_gzip_is_fast_by_default(raw_server: RawServer, level: int | None, xfl: int) -> None:
    # Level 9 (the client library's fixed choice) cost 4-7 us of CPU per value, more than the rest of the sink.
    # By default: zlib-ng's level 2 (XFL 0: neither fastest nor maximum), or the standard zlib's fastest.
    sink = make_sink(f"http://127.0.0.1:{raw_server.port}", **({} if level is None else {"gzip_level": level}))
    await sink.open()
    batch = [reading(i) for i in range(200)]
    try:
        assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()
    _, headers, body = raw_server.requests[0]
    assert headers["content-encoding"] == "gzip"
    assert body[8] == xfl  # RFC 1952 XFL: 4 = compressed with the fastest algorithm, 2 = maximum compression
    assert gzip.decompress(body).decode().splitlines() == LineProtocolEncoder().lines(batch)


@pytest.mark.parametrize("library", ["installed", "zlib"])
def test_gzip_body_is_gzip_with_either_library(monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    if library == "zlib":  # what a machine without a zlib-ng wheel (32-bit ARM) runs
        monkeypatch.setattr(influxdb_sink, "_compress", gzip.compress)
        monkeypatch.setattr(influxdb_sink, "DEFAULT_GZIP_LEVEL", 1)
    body = "\n".join(LineProtocolEncoder().lines([reading(i) for i in range(500)])).encode()
    packed = influxdb_sink.gzip_body(body)
    assert packed[:2] == b"\x1f\x8b" and gzip.decompress(packed) == body
    assert len(packed) < len(body) / 5


async def test_retry_after_as_http_date(raw_server: RawServer) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    raw_server.answer = Answer(429, b"", {"Retry-After": when})
    sink = make_sink(f"http://127.0.0.1:{raw_server.port}")
    result = await send_once(sink, [reading(0)])
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_s is not None and 25 < result.retry_after_s <= 30


async def test_status_tracks_failure_and_recovery(raw_server: RawServer, tmp_path: Path) -> None:
    sink_class = plugins.load(plugins.SINKS, "influxdb")  # as the daemon finds and builds it
    cfg = InfluxDBSinkConfig(type="influxdb", url=f"http://127.0.0.1:{raw_server.port}", org="o", bucket="b")
    sink = sink_class(cfg, site="lab", gateway="gw1", state_dir=tmp_path)
    raw_server.answer = Answer(500, b'{"message":"down"}')
    await sink.open()
    try:
        assert (await sink.send([reading(0)])).outcome is Outcome.RETRY
        assert sink.status() == {
            "url": cfg.url, "bucket": "b", "failing": "retry", "last_error": "HTTP 500: down",
        }  # fmt: skip
        raw_server.answer = Answer(204)
        assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
        assert sink.status()["failing"] is None
    finally:
        await sink.close()


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"sinks": [{"type": "influxdb", "url": "localhost:8086", "bucket": "b", "tokn": "x"}]}, env={})
    text = str(err.value)
    assert "sinks[0].url" in text
    assert "sinks[0].org: required key is missing" in text
    assert "sinks[0].tokn: unknown key; did you mean 'token'?" in text
    with pytest.raises(ConfigError) as err:
        build_config(
            {
                "sinks": [
                    {
                        "type": "influxdb",
                        "url": "http://h",
                        "org": "o",
                        "bucket": "b",
                        "token": "${T}",
                        "token_env": "T",
                    }
                ]
            },
            env={"T": TOKEN},
        )
    assert "sinks[0].token_env: set only one of token, token_file, token_env (token is set too)" in str(err.value)
    assert TOKEN not in str(err.value)


def test_token_from_env_substitution_is_hidden() -> None:
    cfg = build_config(
        {
            "sinks": [
                {"type": "influxdb", "url": "http://h:8086", "org": "o", "bucket": "b", "token": "${INFLUX_TOKEN}"}
            ]
        },
        env={"INFLUX_TOKEN": TOKEN},
    )
    sink_cfg = cfg.sinks[0].config
    assert isinstance(sink_cfg, InfluxDBSinkConfig)
    assert sink_cfg.token is not None and sink_cfg.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(sink_cfg) and TOKEN not in str(sink_cfg.model_dump())


async def test_frames_are_stored_exactly_as_their_readings(victoria: VictoriaMetrics) -> None:
    """send_frames (templates) and send (per reading) of the same values give the same series and points."""

    def polls(device: str) -> list[Frame]:
        meter = FrameFields.of(["voltage", "current", "active_power", "occupancy"], ["V", "A", "W", "/"])
        tags = MappingProxyType({"phase": "L1", "zone": "north side", "unit": "forged"})
        polled = [
            Frame(T0 + k * 1_000_000_000, "lab", "gw1", device, meter, (230.5 + k, 7, -0.25, k % 2 == 0), tags)
            for k in range(3)
        ]
        # Off the template road: a quality and a string are encoded per reading, in the same body.
        odd = FrameFields.of(["temperature", "status"], ["Cel", "/"])
        qualities = (Quality.BAD, Quality.GOOD)
        return [*polled, Frame(T0 + 5_000_000_000, "lab", "gw1", device, odd, (21.5, "ok"), qualities=qualities)]

    sink = make_sink(victoria.url)
    await sink.open()
    try:
        assert (await sink.send_frames(polls("by-frame"))).outcome is Outcome.ACCEPTED
        assert (await sink.send(as_readings(polls("by-reading")))).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()

    def stored(device: str) -> list[tuple[object, ...]]:
        found = victoria.export(f'{{device="{device}"}}')
        labels = [sorted((k, v) for k, v in s["metric"].items() if k != "device") for s in found]  # type: ignore[union-attr]
        return sorted(zip(labels, (s["values"] for s in found), (s["timestamps"] for s in found), strict=True))

    by_frame = stored("by-frame")
    assert by_frame == stored("by-reading")
    assert [dict(labels)["__name__"] for labels, _, _ in by_frame] == [
        "active_power_value", "current_value", "occupancy_value", "status_text", "temperature_quality",
        "temperature_value", "voltage_value",
    ]  # fmt: skip
