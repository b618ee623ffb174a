"""The mqtt sink against a real Mosquitto (plus a TCP relay of ours to cut connections)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import MappingProxyType

import aiomqtt
import pytest

from gateway.config import ConfigError, build_config
from gateway.frame import Frame, FrameFields, as_readings
from gateway.model import Quality
from gateway.sink import Outcome
from gateway.sinks.mqtt import MQTTSink, MQTTSinkConfig
from tests.sample import T0, reading, send_once
from tests.servers import Mosquitto, free_port, running


def make_sink(host: str, port: int, **kw: object) -> MQTTSink:
    cfg = MQTTSinkConfig.model_validate({"type": "mqtt", "host": host, "port": port, "timeout": "5s", **kw})
    return MQTTSink(cfg, site="lab", gateway="gw1")


class Subscriber:
    """Collects every message on ``topic_filter`` (retained ones included) from a real broker."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.port, self.topic_filter = port, topic_filter
        self.messages: list[tuple[str, bytes, bool]] = []
        self._arrived = asyncio.Event()

    async def run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(self.topic_filter, qos=1)
            ready.set()
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                self.messages.append((str(message.topic), payload, message.retain))
                self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes, bool]]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]


@contextlib.asynccontextmanager
async def subscribed(port: int, topic_filter: str = "#") -> AsyncIterator[Subscriber]:
    sub = Subscriber(port, topic_filter)
    ready = asyncio.Event()
    task = asyncio.create_task(sub.run(ready))
    await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield sub
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Relay:
    """A TCP relay between the sink and the broker that can hold back the broker's
    answers (PUBACKs) and cut every connection without an MQTT DISCONNECT."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.hold_answers = asyncio.Event()  # set: nothing flows broker -> sink
        self.forwarded_to_broker = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, broker_w]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    while not upstream and self.hold_answers.is_set():
                        await asyncio.sleep(0.01)
                    if upstream:
                        self.forwarded_to_broker += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(client_r, broker_w, True), pump(broker_r, client_w, False))

    def cut(self) -> None:
        """Abort every relayed connection (TCP RST, no DISCONNECT): the broker must publish the Will."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()


# --- payloads and topics ---------------------------------------------------------------------


async def test_per_reading_topics_and_json_payloads(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port)
    batch = [
        reading(0),
        reading(1, quantity="occupancy", unit="/", value=True, device="bay/7", tags={"level": "-1"}),
        reading(2, quantity="status", unit="/", value="door open", quality=Quality.UNCERTAIN),
    ]
    async with subscribed(mosquitto.port, "lab/gw1/+/+") as sub:
        await sink.open()
        try:
            assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
            messages = await sub.wait_for(3)
        finally:
            await sink.close()
    assert [t for t, _, _ in messages] == ["lab/gw1/th-1/temperature", "lab/gw1/bay_7/occupancy", "lab/gw1/th-1/status"]
    assert json.loads(messages[0][1]) == {
        "ts_ns": T0, "time": "2024-05-01T10:00:00.000000000Z", "site": "lab", "gateway": "gw1", "device": "th-1",
        "quantity": "temperature", "value": 20.0, "unit": "Cel", "quality": "good", "tags": {},
    }  # fmt: skip
    second = json.loads(messages[1][1])
    assert (second["device"], second["value"], second["tags"]) == ("bay/7", True, {"level": "-1"})
    third = json.loads(messages[2][1])
    assert (third["value"], third["quality"], third["time"]) == (
        "door open",
        "uncertain",
        "2024-05-01T10:00:20.000000000Z",
    )


async def test_senml_packs_per_device_and_timestamp(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port, mode="senml", topic="senml/{device}")
    batch = [
        reading(0, device="a"),
        reading(0, device="a", quantity="relative_humidity", unit="%RH", value=55),
        reading(0, device="b", quantity="occupancy", unit="/", value=False),
        reading(1, device="a", quality=Quality.BAD, value=85.0),
    ]
    async with subscribed(mosquitto.port, "senml/#") as sub:
        await sink.open()
        try:
            assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
            await sub.wait_for(3)
        finally:
            await sink.close()
    packs_a = [json.loads(p) for p in sub.payloads("senml/a")]
    assert packs_a == [
        [
            {"bn": "lab:gw1:a:", "bt": 1714557600.0, "n": "temperature", "u": "Cel", "v": 20.0},
            {"n": "relative_humidity", "u": "%RH", "v": 55},
        ],
        [{"bn": "lab:gw1:a:", "bt": 1714557610.0, "n": "temperature", "u": "Cel", "v": 85.0, "quality": 2}],
    ]
    assert [json.loads(p) for p in sub.payloads("senml/b")] == [
        [{"bn": "lab:gw1:b:", "bt": 1714557600.0, "n": "occupancy", "u": "/", "vb": False}]
    ]


@pytest.mark.parametrize("qos", [0, 2])
async def test_qos_0_and_2_deliver_every_reading(mosquitto: Mosquitto, qos: int) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port, qos=qos, max_inflight=7)
    batch = [reading(i) for i in range(30)]
    async with subscribed(mosquitto.port, "lab/gw1/th-1/#") as sub:
        await sink.open()
        try:
            assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
            messages = await sub.wait_for(30)
        finally:
            await sink.close()
    assert [json.loads(p)["value"] for _, p, _ in messages] == [20.0 + i / 4 for i in range(30)]


# --- status, Last Will, faults -----------------------------------------------------------------


async def test_status_online_on_connect_offline_on_close_retained(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port)
    await sink.open()
    async with subscribed(mosquitto.port, "lab/gw1/status") as sub:  # subscribes after: sees the retained one
        assert await sub.wait_for(1) == [("lab/gw1/status", b"online", True)]
        await sink.close()
        assert (await sub.wait_for(2))[1] == ("lab/gw1/status", b"offline", False)
    async with subscribed(mosquitto.port, "lab/gw1/status") as late:
        assert await late.wait_for(1) == [("lab/gw1/status", b"offline", True)]


async def test_last_will_when_the_connection_dies_then_reconnect(mosquitto: Mosquitto) -> None:
    async with Relay(mosquitto.port) as relay:
        sink = make_sink("127.0.0.1", relay.port)
        await sink.open()
        try:
            async with subscribed(mosquitto.port, "lab/gw1/status") as watcher:
                await watcher.wait_for(1)
                relay.cut()
                assert (await watcher.wait_for(2))[1] == ("lab/gw1/status", b"offline", False)
                # the next send reconnects lazily and announces itself again
                assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
                assert (await watcher.wait_for(3))[2] == ("lab/gw1/status", b"online", False)
        finally:
            await sink.close()


async def test_connection_cut_mid_batch_is_retry_and_resend_delivers_all(mosquitto: Mosquitto) -> None:
    batch = [reading(i) for i in range(50)]
    async with Relay(mosquitto.port) as relay, subscribed(mosquitto.port, "lab/gw1/th-1/#") as sub:
        sink = make_sink("127.0.0.1", relay.port, timeout="30s")
        await sink.open()
        try:
            relay.hold_answers.set()  # the broker gets the publishes, the sink never sees a PUBACK
            sending = asyncio.create_task(sink.send(batch))
            await sub.wait_for(50)  # all 50 reached the broker...
            assert not sending.done()  # ...but without PUBACKs the batch is not accepted
            relay.cut()
            result = await asyncio.wait_for(sending, 5)  # well before the 30 s timeout
            assert result.outcome is Outcome.RETRY
            assert "lost mid-batch" in result.detail
            relay.hold_answers.clear()
            assert (await sink.send(batch)).outcome is Outcome.ACCEPTED
            await sub.wait_for(100)
        finally:
            await sink.close()
    values = [json.loads(p)["value"] for _, p, _ in sub.messages]
    assert sorted(set(values)) == [20.0 + i / 4 for i in range(50)]  # nothing lost, duplicates allowed


async def test_nothing_listening_is_retry_saying_connection_refused() -> None:
    port = free_port()
    sink = make_sink("127.0.0.1", port)
    result = await send_once(sink, [reading(0)])
    assert result.outcome is Outcome.RETRY
    assert result.detail == f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    assert sink.status()["connected"] is False


async def test_no_puback_in_time_is_retry(mosquitto: Mosquitto) -> None:
    async with Relay(mosquitto.port) as relay:
        sink = make_sink("127.0.0.1", relay.port, timeout="0.5s")
        await sink.open()
        try:
            relay.hold_answers.set()
            result = await sink.send([reading(0)])
            assert result.outcome is Outcome.RETRY
            assert "no acknowledgement" in result.detail
        finally:
            relay.hold_answers.clear()
            await sink.close()


@pytest.mark.slow
async def test_broker_stopped_is_retry_then_accepted_after_restart(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port)
    mosquitto.stop()
    await sink.open()  # must not raise for a dead broker
    try:
        first = await sink.send([reading(0)])
        assert first.outcome is Outcome.RETRY
        assert "cannot connect" in first.detail
        mosquitto.start()
        assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
        mosquitto.stop()  # now drop a live connection
        await asyncio.sleep(0.2)
        assert (await sink.send([reading(1)])).outcome is Outcome.RETRY
        mosquitto.start()
        async with subscribed(mosquitto.port, "lab/gw1/th-1/temperature") as sub:
            assert (await sink.send([reading(1)])).outcome is Outcome.ACCEPTED
            assert json.loads((await sub.wait_for(1))[0][1])["value"] == 20.25
    finally:
        await sink.close()


# --- authentication and TLS (a second Mosquitto with a password file and a TLS listener) ------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    # A client certificate for mutual TLS (a gateway's identity at the broker).
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=gw-client",
            "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", "client.crt")  # fmt: skip
    return d


class SecureMosquitto(Mosquitto):
    """Password auth on a TLS listener (plus a plain one, to check bad passwords quickly)."""

    def __init__(self, workdir: Path, certs: Path) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        self.mtls_port = free_port()
        passwd = workdir / "passwd"
        passwd.write_text("")
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw", "pa55 word"], check=True)
        passwd.chmod(0o600)
        self.conf.write_text(
            # stay the user running the tests: as root, mosquitto would switch to
            # the "mosquitto" user, which cannot read files under pytest's tmp dir
            f"user {getpass.getuser()}\n"
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwd}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
            # mutual TLS: a client certificate signed by the CA is the credential
            f"listener {self.mtls_port} 127.0.0.1\n"
            f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            "log_type error\n"
        )


@pytest.fixture
def secure_mosquitto(tmp_path: Path, certs: Path) -> Iterator[SecureMosquitto]:
    with running(SecureMosquitto(tmp_path / "secure", certs)) as server:
        yield server  # type: ignore[misc]


async def test_tls_with_password_from_env(
    secure_mosquitto: SecureMosquitto, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQTT_PW_T", "pa55 word")
    sink = make_sink(
        "127.0.0.1", secure_mosquitto.tls_port, ca_file=str(certs / "ca.crt"), username="gw", password_env="MQTT_PW_T"
    )
    await sink.open()
    try:
        assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
        assert sink.status()["connected"] is True
    finally:
        await sink.close()


async def test_mutual_tls_with_a_client_certificate(secure_mosquitto: SecureMosquitto, certs: Path) -> None:
    sink = make_sink("127.0.0.1", secure_mosquitto.mtls_port, ca_file=str(certs / "ca.crt"),
                     cert_file=str(certs / "client.crt"), key_file=str(certs / "client.key"))  # fmt: skip
    await sink.open()
    try:
        assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
    finally:
        await sink.close()
    # The same listener refuses a client that shows no certificate: retried, never accepted.
    anonymous = make_sink("127.0.0.1", secure_mosquitto.mtls_port, ca_file=str(certs / "ca.crt"), timeout="1s")
    await anonymous.open()
    try:
        result = await anonymous.send([reading(1)])
        assert result.outcome is Outcome.RETRY
        assert "set cert_file and key_file" in result.detail  # says what to do next
    finally:
        await anonymous.close()


async def test_tls_with_an_unknown_ca_is_retry(secure_mosquitto: SecureMosquitto) -> None:
    sink = make_sink("127.0.0.1", secure_mosquitto.tls_port, tls=True, username="gw", password="pa55 word")
    await sink.open()  # the system trust store does not know our test CA
    try:
        result = await sink.send([reading(0)])
        assert result.outcome is Outcome.RETRY
        assert "CERTIFICATE_VERIFY_FAILED" in result.detail
    finally:
        await sink.close()


async def test_wrong_password_is_auth_and_never_logged(
    secure_mosquitto: SecureMosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secret = tmp_path / "pw"
    secret.write_text("wrong-secret-xyz\n")
    sink = make_sink("127.0.0.1", secure_mosquitto.port, username="gw", password_file=str(secret))
    result = await send_once(sink, [reading(0)])
    assert result.outcome is Outcome.AUTH
    assert "Not authorized" in result.detail
    assert "wrong-secret-xyz" not in caplog.text
    assert "wrong-secret-xyz" not in repr(sink.config)


# --- config ------------------------------------------------------------------------------------


def _sink_problem(sink: dict[str, object], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        build_config({"sinks": [{"type": "mqtt", "host": "h", **sink}]}, env=env or {})
    return str(err.value)


def test_topic_placeholders_are_checked_at_load() -> None:
    assert "sinks[0].topic: unknown placeholder {sensor}; allowed: {device}, {gateway}, {quantity}, {site}" in (
        _sink_problem({"topic": "x/{sensor}"})
    )
    assert "unknown placeholder {quantity}" in _sink_problem({"mode": "senml", "topic": "{device}/{quantity}"})
    assert "wildcards" in _sink_problem({"topic": "a/+/{device}"})
    assert "sinks[0].status_topic" in _sink_problem({"status_topic": "{site}/{device}/status"})
    assert "plain name" in _sink_problem({"topic": "{device!r}"})
    assert "sinks[0].mode" in _sink_problem({"mode": "csv"})


def test_defaults_follow_the_mode_and_password_sources_are_exclusive() -> None:
    cfg = build_config({"sinks": [{"type": "mqtt", "host": "h", "mode": "senml"}]}, env={}).sinks[0].config
    assert isinstance(cfg, MQTTSinkConfig)
    assert (cfg.topic, cfg.qos, cfg.status_topic) == ("{site}/{gateway}/{device}", 1, "{site}/{gateway}/status")
    sink = MQTTSink(cfg, site="lab", gateway="gw 1")
    assert sink.client_id == "gateway-gw 1-mqtt"
    assert sink.status_topic == "lab/gw 1/status"
    problem = _sink_problem({"password": "${PW}", "password_env": "PW"}, env={"PW": "hunter2-secret"})
    assert "sinks[0].password_env" in problem and "hunter2-secret" not in problem


async def test_nan_is_rejected(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port)
    result = await send_once(sink, [reading(0), reading(1, value=float("inf"))])
    assert result.outcome is Outcome.REJECTED


async def test_senml_frames_publish_the_same_topics_and_payloads_as_their_readings(mosquitto: Mosquitto) -> None:
    sink = make_sink(mosquitto.host, mosquitto.port, mode="senml", topic="senml/{site}/{device}")
    meter = FrameFields.of(["voltage", "current", "power_factor"], ["V", "A", "/"])
    frames = [
        Frame(T0, "lab", "gw1", "meter 1", meter, (230.25, 7, 0.98), MappingProxyType({"phase": "L1"})),
        Frame(T0, "lab", "gw1", "meter 2", meter, (229.0, 6, 0.97)),
        # Same device and instant, another tag set: one pack with the first frame, as readings are grouped.
        Frame(T0, "lab", "gw1", "meter 1", meter, (231.5, 8, 0.99), MappingProxyType({"phase": "L2"})),
        Frame(T0 + 1_000_000_000, "lab", "gw1", "meter 1", FrameFields.of(["alarm"], ["/"]), (True,)),
    ]
    async with subscribed(mosquitto.port, "senml/#") as sub:
        await sink.open()
        try:
            assert (await sink.send_frames(frames)).outcome is Outcome.ACCEPTED
            by_frame = [(t, p) for t, p, _ in await sub.wait_for(3)]
            assert (await sink.send(as_readings(frames))).outcome is Outcome.ACCEPTED
            by_reading = [(t, p) for t, p, _ in (await sub.wait_for(6))[3:]]
        finally:
            await sink.close()
    assert by_frame == by_reading
    assert [t for t, _ in by_frame] == ["senml/lab/meter 1", "senml/lab/meter 2", "senml/lab/meter 1"]
    assert [record["n"] for record in json.loads(by_frame[0][1])] == [
        "voltage/phase/L1", "current/phase/L1", "power_factor/phase/L1",
        "voltage/phase/L2", "current/phase/L2", "power_factor/phase/L2",
    ]  # fmt: skip
