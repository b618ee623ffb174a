"""The status page's server and API against a real daemon on the simulated driver: routes, auth, read-only."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.daemon import Daemon
from gateway.model import Quality, make_reading
from gateway.web.history import Ring, SeriesHistory
from gateway.web.store import thin
from gateway.web.view import plain_words
from tests.servers import free_port

EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import|fetch\(\s*["'`]https?:"""
)
PASSWORD = "s3cret-Pa55"


def web_config(tmp_path: Path, port: int, web_extra: str = "") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nsite = "test-site"\nname = "gw"\nstate_dir = "{tmp_path / "state"}"\n'
        '[buffer]\nflush_interval = "50ms"\nsync = "normal"\n'
        "[metrics]\nenabled = false\n"
        f'[web]\nlisten = "127.0.0.1:{port}"\nhistory_step = "1s"\n{web_extra}'
        '[[sources]]\ndriver = "simulated"\nname = "street"\ninterval = "200ms"\n'
        'devices = [{ name = "park-weather", kind = "weather" }]\n'
        '[[sinks]]\ntype = "local"\n'
        '[[sinks]]\ntype = "mqtt"\nname = "uplink"\nhost = "127.0.0.1"\nport = 9\nusername = "u"\n'
        f'password_file = "{tmp_path / "mqtt-password"}"\n'
    )
    (tmp_path / "mqtt-password").write_text("mqtt-secret-value\n")
    return path


async def http(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange (no client library: the test sees exactly what the server sends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, body


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


@pytest.fixture
async def daemon_on(tmp_path: Path) -> AsyncIterator[tuple[Daemon, int]]:
    port = free_port()
    daemon = Daemon(load_config(web_config(tmp_path, port)), serve_metrics=False, serve_web=True)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    await wait_for(lambda: daemon.web is not None and daemon.web.view.data.get("buffer") is not None)
    await wait_for(lambda: daemon.web is not None and b"park-weather" in daemon.web.view.payload)
    yield daemon, port
    daemon.request_stop()
    await task


async def test_one_status_a_second_feeds_both_the_status_file_and_the_page(tmp_path: Path) -> None:
    daemon = Daemon(load_config(web_config(tmp_path, free_port())), serve_metrics=False, serve_web=True)
    computed = ticks = 0
    real_status = daemon.status

    def counted_status() -> dict[str, Any]:
        nonlocal computed
        computed += 1
        return real_status()

    daemon.status = counted_status  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run())
    try:
        await daemon.ready.wait()
        assert daemon.web is not None
        tick = daemon.web.view.tick

        def counted_tick(*status: dict[str, Any]) -> None:
            nonlocal ticks
            ticks += 1
            tick(*status)

        daemon.web.view.tick = counted_tick  # type: ignore[method-assign,assignment]
        computed_before = computed
        status_file = daemon.state_dir / "status.json"
        await wait_for(status_file.exists)
        written_before = json.loads(status_file.read_text())["updated_ns"]
        await wait_for(lambda: ticks >= 4 and json.loads(status_file.read_text())["updated_ns"] != written_before)
        assert computed - computed_before == ticks  # one status per tick, shared with status.json
        assert json.loads((await http(daemon.web.port or 0, "GET", "/api/status"))[2])["sources"]
    finally:
        daemon.request_stop()
        await task


def test_the_page_tick_takes_the_status_it_is_given() -> None:
    from gateway.web.view import StatusView

    def no_second_status() -> dict[str, object]:
        raise AssertionError("the tick computed a status of its own")

    view = StatusView(status=no_second_status, history=SeriesHistory())
    view.tick(_daemon_status(sink_state="ok", pending=0, oldest_age_s=0.0, down=["meter"]))
    assert json.loads(view.payload)["sources"][0]["devices"][0]["name"] == "meter"


def _password_config(tmp_path: Path, port: int) -> Path:
    (tmp_path / "web-password").write_text(PASSWORD + "\n")
    return web_config(tmp_path, port, f'password_file = "{tmp_path / "web-password"}"\n')


async def test_status_api_shows_devices_values_buffer_and_sinks(daemon_on: tuple[Daemon, int]) -> None:
    _daemon, port = daemon_on
    code, headers, body = await http(port, "GET", "/api/status")
    assert code == 200 and headers["content-type"] == "application/json"
    status = json.loads(body)
    assert status["site"] == "test-site" and status["api"] == 1
    (source,) = status["sources"]
    (device,) = source["devices"]
    assert device["name"] == "park-weather" and device["state"] == "up"
    assert {q["quantity"] for q in device["series"]} == {"temperature", "relative_humidity", "pressure"}
    assert {s["name"] for s in status["sinks"]} == {"local", "uplink"}
    assert status["buffer"]["series_id"] == "gateway/buffer/buffer_depth"
    uplink = next(s for s in status["sinks"] if s["name"] == "uplink")
    assert uplink["state"] == "failing" and "refused" in uplink["error"]
    assert status["overall"]["state"] == "red"
    assert any(r.startswith("sink uplink not delivering") for r in status["overall"]["reasons"])
    code, _, body = await http(port, "GET", "/api/series")
    ids = {s["id"] for s in json.loads(body)["series"]}
    assert "street/park-weather/temperature" in ids


async def test_points_of_one_series_come_from_the_local_store(daemon_on: tuple[Daemon, int]) -> None:
    daemon, port = daemon_on
    await wait_for(lambda: daemon.dispatchers["local"].sent_total >= 9)
    code, _, body = await http(port, "GET", "/api/series/points?source=street&device=park-weather&quantity=pressure")
    answer = json.loads(body)
    assert code == 200 and answer["origin"] == "local store" and answer["unit"] == "hPa"
    assert len(answer["points"]) >= 3
    assert all(1000 < v < 1030 for _, v in answer["points"])
    code, _, _ = await http(port, "GET", "/api/series/points?source=street&device=nope&quantity=pressure")
    assert code == 404
    code, _, body = await http(port, "GET", "/api/series/points?source=street")
    assert code == 400 and b"give source, device, quantity" in body


async def test_only_get_and_head_are_served(daemon_on: tuple[Daemon, int]) -> None:
    _, port = daemon_on
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        code, headers, _ = await http(port, method, "/api/status")
        assert code == 405, method
        assert headers["allow"] == "GET, HEAD"
    code, headers, body = await http(port, "HEAD", "/")
    assert code == 200 and body == b"" and int(headers["content-length"]) > 0


async def test_page_files_ship_in_the_package_and_stay_light(daemon_on: tuple[Daemon, int]) -> None:
    _, port = daemon_on
    total = 0
    for path in ("/", "/app.js", "/app.css", "/favicon.svg"):
        code, headers, body = await http(port, "GET", path)
        assert code == 200, path
        assert "default-src 'self'" in headers["content-security-policy"]
        assert not EXTERNAL.search(body.decode()), f"{path} loads something from outside"
        total += len(body)
    assert total <= 200 * 1024


async def test_wrong_or_missing_password_gets_401_and_the_right_one_gets_in(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(load_config(_password_config(tmp_path, port)), serve_metrics=False, serve_web=True)
    task = asyncio.create_task(daemon.run())
    try:
        await daemon.ready.wait()

        def basic(pw: str) -> dict[str, str]:
            return {"Authorization": "Basic " + base64.b64encode(f"tech:{pw}".encode()).decode()}

        code, headers, _ = await http(port, "GET", "/api/status")
        assert code == 401 and headers["www-authenticate"].startswith("Basic")
        assert (await http(port, "GET", "/api/status", basic("wrong")))[0] == 401
        assert (await http(port, "GET", "/", {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await http(port, "GET", "/api/status", {"Authorization": "Basic !!notbase64"}))[0] == 401
        assert (await http(port, "GET", "/api/status", basic(PASSWORD)))[0] == 200
        assert (await http(port, "GET", "/api/status", {"Authorization": f"Bearer {PASSWORD}"}))[0] == 200
    finally:
        daemon.request_stop()
        await task


async def test_no_secret_in_any_api_answer(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(load_config(_password_config(tmp_path, port)), serve_metrics=False, serve_web=True)
    task = asyncio.create_task(daemon.run())
    try:
        await daemon.ready.wait()
        await wait_for(lambda: daemon.web is not None and b"park-weather" in daemon.web.view.payload)
        auth = {"Authorization": f"Bearer {PASSWORD}"}
        paths = ["/api/status", "/api/series", "/api/sparklines", "/", "/app.js",
                 "/api/series/points?source=street&device=park-weather&quantity=temperature"]  # fmt: skip
        for path in paths:
            code, headers, body = await http(port, "GET", path, auth)
            assert code == 200, path
            text = body.decode() + json.dumps(headers)
            for secret in (PASSWORD, "mqtt-secret-value", "web-password", "mqtt-password"):
                assert secret not in text, f"{secret} in {path}"
    finally:
        daemon.request_stop()
        await task


async def test_a_stopped_daemon_stops_serving_the_page(daemon_on: tuple[Daemon, int]) -> None:
    daemon, port = daemon_on
    daemon.request_stop()
    await wait_for(lambda: daemon.web is None)
    with pytest.raises(OSError):
        await http(port, "GET", "/api/status")


def test_non_loopback_without_password_is_refused_by_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[web]\nlisten = "0.0.0.0:8080"\n')
    assert main(["check", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "web.listen" in err and "password_file" in err and str(config) in err
    config.write_text(f'[web]\nlisten = "0.0.0.0:8080"\npassword_file = "{tmp_path / "pw"}"\n')
    assert main(["check", "-c", str(config)]) == 0
    assert "password required" in capsys.readouterr().out
    for loopback in ("127.0.0.1:8080", "[::1]:8080", "localhost:8080"):
        parse_config(f'[web]\nlisten = "{loopback}"\n')  # no password needed on the box itself
    assert parse_config('[web]\nenabled = false\nlisten = "0.0.0.0:1"\n').base.web.enabled is False


async def test_web_disabled_serves_nothing(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(load_config(web_config(tmp_path, port, "enabled = false\n")), serve_metrics=False, serve_web=True)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    try:
        assert daemon.web is None
        with pytest.raises(OSError):
            await http(port, "GET", "/")
        # nor does it pay for one: no history hook on the hot path, nothing kept
        assert daemon.supervisors and all(s.normaliser.observer is None for s in daemon.supervisors.values())
        street = daemon.supervisors["street"]
        for _ in range(200):  # until the source has had readings through its normaliser
            if street.readings_total:
                break
            await asyncio.sleep(0.05)
        assert street.readings_total > 0
        daemon.history.sample()
        assert not daemon.history.series()
    finally:
        daemon.request_stop()
        await task


# --- the in-memory history -------------------------------------------------------


def _reading(device: str, quantity: str, value: float, ts_ns: int):  # type: ignore[no-untyped-def]
    return make_reading(ts_ns, "s", "g", device, quantity, value, "V", {}, Quality.GOOD)


def test_history_keeps_one_point_per_step_and_is_bounded() -> None:
    history = SeriesHistory(step_s=10.0)
    observe = history.observer("src")
    t0 = 1_700_000_000 * 10**9
    for second in range(0, 7200):  # two hours of a 1 Hz series, sampled every second
        observe([_reading("dev", "voltage", float(second), t0 + second * 10**9)])
        history.sample()
    now = t0 + 7199 * 10**9
    hour = history.points(("src", "dev", "voltage"), now - 3600 * 10**9, now)
    assert len(hour) == 361  # one per 10 s step over the hour, both ends included
    assert hour[-1][1] == 7199.0  # the last value of its step
    day = history.points(("src", "dev", "voltage"), now - 86400 * 10**9, now)
    assert len(day) == 61  # two hours of 2-minute steps, the first one partial
    assert history.nbytes() == (361 + 720) * 4  # float32 points


def test_ring_ignores_a_late_reading_of_an_overwritten_step() -> None:
    ring = Ring(1.0, 4)
    ring.put(10 * 10**9, 1.0)
    ring.put(14 * 10**9, 2.0)  # same slot, newer step
    ring.put(10 * 10**9, 3.0)  # late: must not replace the newer step
    assert ring.points(0, 20 * 10**9) == [(14 * 10**9, 2.0)]


def test_thin_keeps_at_most_max_points_and_the_mean() -> None:
    points = [(i * 10**9, float(i)) for i in range(1000)]
    out = thin(points, 0, 1000 * 10**9, 100)
    assert len(out) <= 100
    assert math.isclose(sum(v for _, v in out) / len(out), 499.5, rel_tol=0.01)
    assert thin(points[:5], 0, 10**10, 100) == points[:5]


def test_errors_are_shown_in_plain_words() -> None:
    assert plain_words("poll: TimeoutError: ") == "no answer in time"
    refused = plain_words("start: ConnectionRefusedError: [Errno 111] Connect call failed")
    assert refused is not None and refused.startswith("connection refused")
    assert plain_words("CRC error") == "CRC error"


def _daemon_status(*, sink_state: str, pending: int, oldest_age_s: float, down: list[str]) -> dict[str, object]:
    import time

    now = time.time_ns()
    oldest = now - int(oldest_age_s * 1e9)
    return {
        "site": "s", "gateway": "g", "version": "1", "started_ns": now - 10**10, "clock_synchronized": True,
        "sources": {"bus": {"driver": "modbus", "state": "running", "error": None, "restarts": 0, "readings": 5,
                            "devices_down": down, "down_reasons": {d: "poll: TimeoutError: " for d in down}}},
        "sinks": {"up": {"type": "influxdb", "state": sink_state, "error": None if sink_state == "ok" else "HTTP 503",
                         "sent": 100, "dead_lettered": 0, "last_success_ns": now, "url": "https://user:pw@influx"}},
        "buffer": {"readings": pending, "bytes": 10 * pending, "file_bytes": 4096, "oldest_ts_ns": oldest,
                   "dropped_oldest_total": 0, "dropped_newest_total": 0, "dead_letters_total": 0,
                   "sinks": {"up": {"pending": pending, "oldest_pending_ts_ns": oldest,
                                    "dead_letters": 0}}},
    }  # fmt: skip


def test_view_says_red_with_reasons_during_a_sink_outage_and_a_dead_device() -> None:
    from gateway.web.view import StatusView

    status = _daemon_status(sink_state="failing", pending=5000, oldest_age_s=600, down=["meter"])
    view = StatusView(status=lambda: status, history=SeriesHistory())
    view.tick()
    data = json.loads(view.payload)
    assert data["overall"]["state"] == "red"
    assert "device meter down: no answer in time" in data["overall"]["reasons"]
    assert "sink up not delivering: HTTP 503" in data["overall"]["reasons"]
    (device,) = data["sources"][0]["devices"]
    assert device["state"] == "down" and device["down_since_ns"] is not None and device["availability"] == 0.0
    (sink,) = data["sinks"]
    assert sink["backlog"] == 5000 and sink["drain_s"] is None and sink["lag_s"] > 500  # not draining
    assert b"user:pw" not in view.payload and "url" not in sink  # only listed fields reach the page


def test_view_says_a_healthy_sink_with_readings_in_flight_keeps_up() -> None:
    from gateway.web.view import StatusView

    status = _daemon_status(sink_state="ok", pending=16, oldest_age_s=0.5, down=[])
    view = StatusView(status=lambda: status, history=SeriesHistory())
    view.tick()
    data = json.loads(view.payload)
    assert data["overall"] == {"state": "green", "reasons": []}
    assert data["sinks"][0]["drain_s"] == 0.0


def test_view_shows_the_mean_poll_latency_since_its_last_tick() -> None:
    from gateway.web.view import StatusView

    status = _daemon_status(sink_state="ok", pending=0, oldest_age_s=0.0, down=[])
    (source,) = status["sources"].values()
    source.update(polls=10, poll_seconds_total=1.0)
    view = StatusView(status=lambda: status, history=SeriesHistory())
    view.tick()
    assert json.loads(view.payload)["sources"][0]["poll_latency_s"] == 0.1  # 1.0 s over 10 polls
    source.update(polls=14, poll_seconds_total=3.0)  # 4 more polls of 0.5 s each
    view.tick()
    assert json.loads(view.payload)["sources"][0]["poll_latency_s"] == 0.5
    view.tick()  # no poll since: the last known latency stays
    assert json.loads(view.payload)["sources"][0]["poll_latency_s"] == 0.5


async def test_malformed_or_oversized_requests_get_400_and_the_server_goes_on(daemon_on: tuple[Daemon, int]) -> None:
    _, port = daemon_on

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    assert (await raw(b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await raw(b"GET / SPDY/9\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await http(port, "GET", "/api/status"))[0] == 200
    code, _, body = await http(port, "GET", "/../../etc/passwd")
    assert code == 404 and b"root:" not in body


def test_history_memory_is_capped_and_series_beyond_it_keep_their_last_value(caplog: pytest.LogCaptureFixture) -> None:
    per_series = 4 * (361 + 720)
    history = SeriesHistory(step_s=10.0, max_bytes=3 * per_series)
    observe = history.observer("src")
    t0 = 1_700_000_000 * 10**9
    for second in range(3):
        observe([_reading(f"dev{i}", "voltage", float(i), t0 + second * 10**9) for i in range(5)])
        history.sample()
    assert history.ring_bytes == history.nbytes() == 3 * per_series
    assert history.series_without_rings == 2
    assert sum("in-memory history is full" in r.message for r in caplog.records) == 1  # logged once
    assert history.points(("src", "dev4", "voltage"), t0, t0 + 10**10) == []
    assert [r.value for _, r in history.latest()] == [0.0, 1.0, 2.0, 3.0, 4.0]  # still on the page
    history.forget_source("src")
    assert history.ring_bytes == 0 and history.series() == []


async def test_a_reload_that_removes_a_source_removes_it_from_the_page(daemon_on: tuple[Daemon, int]) -> None:
    daemon, port = daemon_on
    assert daemon.config.path is not None
    text = daemon.config.path.read_text()
    other = '[[sources]]\ndriver = "simulated"\nname = "harbour"\ninterval = "200ms"\ndevices = [{ name = "quay" }]\n'
    daemon.config.path.write_text(text.split("[[sources]]")[0] + other + "[[sinks]]" + text.split("[[sinks]]", 1)[1])
    assert await daemon.reload()
    await wait_for(lambda: b'"quay"' in daemon.web.view.payload if daemon.web else False)
    status = json.loads((await http(port, "GET", "/api/status"))[2])
    assert [s["name"] for s in status["sources"]] == ["harbour"]
    series = json.loads((await http(port, "GET", "/api/series"))[2])["series"]
    assert not any(s["source"] == "street" for s in series)


# --- the tick is cheap; the page is rendered when asked ------------------------------------------------------


def _frame(device: str, quantities: list[str], values: list[object], ts_ns: int, unit: str = "V"):  # type: ignore[no-untyped-def]
    from gateway.frame import Frame, FrameFields

    return Frame(ts_ns, "s", "g", device, FrameFields.of(quantities, [unit] * len(quantities)), values)  # type: ignore[arg-type]


class _CountingHistory(SeriesHistory):
    """Counts how often the newest values of every series are read (the per-series work of the page)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def latest_points(self, source: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().latest_points(source)


def test_tick_reads_no_series_and_the_page_is_rendered_once_per_tick_when_asked() -> None:
    from gateway.web.view import StatusView

    history = _CountingHistory()
    t0 = 1_700_000_000 * 10**9
    history.observer("bus")([_frame("meter", ["current", "voltage"], [1.5, 230.0], t0)])
    status = _daemon_status(sink_state="ok", pending=0, oldest_age_s=0.0, down=[])
    view = StatusView(status=lambda: status, history=history)
    for _ in range(3):  # nobody looks: no series is read, no JSON is made
        view.tick()
    assert history.reads == 0
    first = view.payload
    assert view.payload is first and history.reads == 1  # a second client in the same second: same bytes
    history.observer("bus")([_frame("meter", ["current", "voltage"], [1.6, 231.0], t0 + 10**9)])
    view.tick()
    assert history.reads == 1  # the tick still reads none
    (device,) = json.loads(view.payload)["sources"][0]["devices"]
    assert [s["value"] for s in device["series"]] == [1.6, 231.0] and history.reads == 2


def test_status_json_has_every_series_of_every_device_and_the_devices_down() -> None:
    from gateway.web.view import StatusView

    history = SeriesHistory()
    t0 = 1_700_000_000 * 10**9
    observe = history.observer("bus")
    observe([_frame("meter", ["voltage", "current"], [230.0, 1.5], t0)])
    observe([_reading("meter", "energy", 7.0, t0 + 5)])
    observe([_frame("pump", ["state"], ["running"], t0 + 9, unit="")])
    status = _daemon_status(sink_state="ok", pending=0, oldest_age_s=0.0, down=["valve"])
    view = StatusView(status=lambda: status, history=history)
    view.tick()
    (source,) = json.loads(view.payload)["sources"]
    assert list(source) == ["name", "driver", "state", "error", "restarts", "readings", "last_reading_ns",
                            "poll_latency_s", "devices"]  # fmt: skip
    assert source["last_reading_ns"] == t0 + 9
    meter, pump, valve = source["devices"]
    assert list(meter) == ["name", "state", "down_since_ns", "error", "availability", "last_reading_ns", "series"]
    assert meter["name"] == "meter" and meter["state"] == "up" and meter["availability"] == 1.0
    assert meter["last_reading_ns"] == t0 + 5
    assert meter["series"] == [
        {"id": "bus/meter/current", "quantity": "current", "unit": "V", "value": 1.5, "ts_ns": t0, "quality": "good"},
        {"id": "bus/meter/energy", "quantity": "energy", "unit": "V", "value": 7.0, "ts_ns": t0 + 5,
         "quality": "good"},
        {"id": "bus/meter/voltage", "quantity": "voltage", "unit": "V", "value": 230.0, "ts_ns": t0,
         "quality": "good"},
    ]  # fmt: skip
    assert [s["value"] for s in pump["series"]] == ["running"]
    assert valve["state"] == "down" and valve["series"] == [] and valve["last_reading_ns"] is None
    assert valve["error"] == "no answer in time" and valve["availability"] == 0.0


def test_sampler_puts_each_new_frame_into_its_rings_and_the_newest_of_two_layouts_wins() -> None:
    history = SeriesHistory(step_s=10.0)
    observe = history.observer("bus")
    t0 = 1_700_000_000 * 10**9
    observe([_frame("meter", ["voltage", "current", "label"], [230.0, 1.5, "L1"], t0)])
    observe([_frame("meter", ["voltage", "power"], [231.0, math.inf], t0 + 10**9)])  # same voltage, other layout
    history.sample()
    span = (t0 - 10**10, t0 + 10**10)
    assert [v for _, v in history.points(("bus", "meter", "voltage"), *span)] == [231.0]  # the newest frame
    assert [v for _, v in history.points(("bus", "meter", "current"), *span)] == [1.5]  # beside a text value
    assert history.points(("bus", "meter", "power"), *span) == []  # not finite: no point
    assert history.points(("bus", "meter", "label"), *span) == []  # text: last value only
    assert history.devices("bus") == {"meter"}
    observe([_frame("meter", ["voltage", "current", "label"], [229.0, 1.0, "L1"], t0 - 10**10)])  # a step before
    history.sample()
    assert [v for _, v in history.points(("bus", "meter", "voltage"), *span)] == [229.0, 231.0]
    observe([_frame("meter", ["voltage", "power"], [232.0, 5.0], t0 + 2 * 10**9)])
    history.sample()
    assert [v for _, v in history.points(("bus", "meter", "voltage"), *span)] == [229.0, 232.0]
    assert [v for _, v in history.points(("bus", "meter", "power"), *span)] == [5.0]
    observe([_frame("meter", ["voltage", "power"], [1.0, 1.0], t0 - 3610 * 10**9)])  # an hour late: same ring slot
    history.sample()
    assert [v for _, v in history.points(("bus", "meter", "voltage"), *span)] == [229.0, 232.0]  # kept the newer
    observe([_frame("meter", ["voltage", "power"], [240.0, 5.0], t0 + 3 * 10**9)])
    observe([_frame("meter", ["voltage", "current", "label"], [239.0, 1.0, "L1"], t0 + 25 * 10**8)])  # older, later
    history.sample()
    assert [v for _, v in history.points(("bus", "meter", "voltage"), *span)] == [229.0, 240.0]  # newest by time
