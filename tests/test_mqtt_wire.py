"""gateway/mqtt_wire.py against a real Mosquitto, and against small raw brokers of ours that misbehave."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt_wire import ConnectionLost, MqttProtocol, MqttPublisher, ProtocolError, Will
from gateway.sink import Outcome
from tests.sample import reading, send_once
from tests.servers import Mosquitto
from tests.test_sink_mqtt import make_sink, subscribed

Packet = tuple[int, bytes]  # first byte, body
CONNACK_OK = b"\x20\x02\x00\x00"


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    first = (await reader.readexactly(1))[0]
    length = shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return first, await reader.readexactly(length)


def publish_pid(packet: Packet) -> int:
    first, body = packet
    assert first >> 4 == 3 and first >> 1 & 3, f"not a QoS 1/2 PUBLISH: {packet}"
    at = 2 + int.from_bytes(body[:2], "big")
    return int.from_bytes(body[at : at + 2], "big")


def ack(kind: int, pid: int) -> bytes:
    return bytes((kind, 2)) + pid.to_bytes(2, "big")


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBroker:
    """A TCP server that answers CONNECT with ``connack``, then hands the connection to a script
    (one script per connection, the last one for any further connection)."""

    def __init__(self, *scripts: Script, connack: bytes = CONNACK_OK) -> None:
        self.scripts, self.connack = scripts, connack
        self.port = 0
        self.connections = 0
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawBroker:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        assert not self.errors, self.errors

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            first, _ = await read_packet(reader)
            assert first == 0x10, f"expected CONNECT, got {first:#x}"
            writer.write(self.connack)
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except BaseException as exc:  # reported by __aexit__: an assertion here must fail the test
            self.errors.append(exc)
        finally:
            writer.close()


async def acking(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-behaved broker for QoS 1."""
    while True:
        packet = await read_packet(reader)
        if packet[0] >> 4 == 3:
            writer.write(ack(0x40, publish_pid(packet)))


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads everything, answers nothing (no PUBACK, no PINGRESP)."""
    while await reader.read(65536):
        pass


async def connected(port: int, **kw: object) -> MqttPublisher:
    client = MqttPublisher("127.0.0.1", port, client_id="wire-test", **kw)  # type: ignore[arg-type]
    await client.connect(5)
    return client


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- against Mosquitto -----------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_each_qos_delivers_exactly_the_payloads_in_order(mosquitto: Mosquitto, qos: int) -> None:
    messages = [(f"wire/{i % 3}", f"m{i}".encode() * (1 + i % 50)) for i in range(300)]
    async with subscribed(mosquitto.port, "wire/#") as sub:
        client = await connected(mosquitto.port, max_inflight=20)
        try:
            await client.publish_many(messages, qos=qos)
            await client.publish_many(messages[:1], qos=qos)  # one more: a batch after a batch
            received = await sub.wait_for(301)
        finally:
            await client.disconnect()
    for topic in ("wire/0", "wire/1", "wire/2"):
        expected = [p for t, p in messages if t == topic] + ([messages[0][1]] if topic == "wire/0" else [])
        assert sub.payloads(topic) == expected
    assert not any(retained for _, _, retained in received)


async def test_retain_flag(mosquitto: Mosquitto) -> None:
    client = await connected(mosquitto.port)
    try:
        await client.publish_many([("keep/a", b"kept")], qos=1, retain=True)
        await client.publish_many([("keep/b", b"not kept")], qos=1)
        await client.publish_many([("keep/c", b"kept too")], qos=0, retain=True)
        await client.publish_many([("keep/d", b"marker")], qos=1, retain=True)  # QoS 1: acked after keep/c
    finally:
        await client.disconnect()
    async with subscribed(mosquitto.port, "keep/#") as sub:  # after the fact: retained messages only
        await sub.wait_for(3)
    assert sorted(sub.messages) == [
        ("keep/a", b"kept", True),
        ("keep/c", b"kept too", True),
        ("keep/d", b"marker", True),
    ]


async def test_a_clean_disconnect_sends_disconnect_and_an_abort_lets_the_broker_publish_the_will(
    mosquitto: Mosquitto,
) -> None:
    async with subscribed(mosquitto.port, "will/#") as sub:
        aborted = await connected(mosquitto.port, will=Will("will/a", b"gone a"))
        aborted.abort()
        assert (await sub.wait_for(1))[0] == ("will/a", b"gone a", False)
    packets: list[Packet] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            packets.append(await read_packet(reader))

    async with RawBroker(record) as broker:
        client = await connected(broker.port, will=Will("will/b", b"gone b"))
        await client.publish_many([("t", b"x")], qos=0)
        await client.disconnect()
        await until(lambda: len(packets) == 2)
    assert packets[-1] == (0xE0, b"")  # DISCONNECT: the broker discards the Will
    assert client.lost.done() and not client.connected


# --- packet ids, acks in pieces, flow control (raw brokers) ---------------------------------------------


async def test_packet_ids_wrap_past_65535_and_skip_an_id_still_in_flight() -> None:
    total, window = 66_000, 50
    seen: list[int] = []

    async def out_of_order(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outstanding: set[int] = set()
        held = 0  # the first id stays unacknowledged until the ids have wrapped
        wrapped = False
        received = 0
        while received < total:
            pid = publish_pid(await read_packet(reader))
            received += 1
            assert pid not in outstanding, f"packet id {pid} reused while in flight"
            assert 1 <= pid <= 0xFFFF
            outstanding.add(pid)
            seen.append(pid)
            assert len(outstanding) <= window
            held = held or pid
            wrapped = wrapped or (len(seen) > 1 and pid < seen[-2])
            if len(outstanding) == window or received == total:
                keep = {held} if not wrapped and received < total else set()
                release = sorted(outstanding - keep)
                writer.write(b"".join(ack(0x40, p) for p in reversed(release)))  # newest first
                outstanding -= set(release)
        await reader.read()

    async with RawBroker(out_of_order) as broker:
        client = await connected(broker.port, max_inflight=window)
        try:
            await asyncio.wait_for(client.publish_many([("t", b"")] * total, qos=1), 60)
        finally:
            await client.disconnect()
    wrap = next(i for i in range(1, len(seen)) if seen[i] < seen[i - 1])
    assert seen[0] == 1 and seen[wrap - 1] == 0xFFFF
    assert seen[wrap] == 2  # 1 was still in flight, so it was skipped


@pytest.mark.parametrize("qos", [1, 2])
async def test_acks_in_single_bytes_and_many_in_one_write(qos: int) -> None:
    count = 40
    pubrels: list[int] = []

    async def dribbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids = [publish_pid(await read_packet(reader)) for _ in range(count)]
        first_kind = 0x40 if qos == 1 else 0x50
        scrambled = pids[1::2] + pids[0::2]
        writer.write(b"".join(ack(first_kind, p) for p in scrambled[: count // 2]))  # coalesced
        for pid in scrambled[count // 2 :]:  # one byte a write
            for byte in ack(first_kind, pid):
                writer.write(bytes((byte,)))
                await writer.drain()
                await asyncio.sleep(0.001)  # let each byte arrive in its own read
        if qos == 2:
            for _ in range(count):
                first, body = await read_packet(reader)
                assert first == 0x62, f"expected PUBREL, got {first:#x}"
                pubrels.append(int.from_bytes(body, "big"))
            blob = b"".join(ack(0x70, p) for p in pubrels)
            writer.write(blob[:3])
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(blob[3:])
        await reader.read()

    async with RawBroker(dribbling) as broker:
        client = await connected(broker.port, max_inflight=count)
        try:
            await asyncio.wait_for(client.publish_many([("t", b"p")] * count, qos=qos), 10)
            assert client.connected
        finally:
            await client.disconnect()
    if qos == 2:
        assert sorted(pubrels) == list(range(1, count + 1))


async def test_a_broker_that_does_not_read_pauses_the_sender() -> None:
    count, size = 2000, 20_000  # 40 MB: more than the kernel's socket buffers hold
    reading_allowed = asyncio.Event()
    received = 0

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reading_allowed.wait()
        while received < count:
            await read_packet(reader)
            received += 1
        await reader.read()

    async with RawBroker(slow_reader) as broker:
        client = await connected(broker.port)
        proto = client.protocol
        assert proto is not None
        try:
            sending = asyncio.create_task(client.publish_many([("t", b"x" * size)] * count, qos=0))
            await until(lambda: proto.writing_paused)
            assert not sending.done()
            # paused at the transport's high-water mark (64 KiB) plus at most one 64 KiB chunk and one message
            assert proto.write_buffer_size < 64 * 1024 * 2 + 2 * size
            reading_allowed.set()
            await asyncio.wait_for(sending, 30)
            await until(lambda: received == count, 30)
        finally:
            await client.disconnect()


# --- misbehaving brokers through the sink: RETRY with a reason, never a crash ---------------------------


async def _after_first_publish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    await read_packet(reader)
    writer.write(answer)
    await writer.drain()


@pytest.mark.parametrize(
    ("answer", "close", "expected"),
    [
        (b"\xf0\x00", False, "protocol violation by the broker: unexpected packet f000"),  # reserved type 15
        (b"\x90\x03\x00\x01\x00", False, "protocol violation by the broker: unexpected packet"),  # a SUBACK
        (b"\x40\xff\xff\xff\xff", False, "a remaining length longer than four bytes"),
        (b"\x40\x03\x00\x01\x00", False, "unexpected packet"),  # a PUBACK of the wrong length
        (b"\x40\x02\x00", True, "lost mid-batch: connection closed by the broker"),  # truncated, then EOF
        (b"", True, "lost mid-batch: connection closed by the broker"),  # closes mid-batch
    ],
)
async def test_a_misbehaving_broker_is_retry_with_a_reason_then_the_next_send_reconnects(
    answer: bytes, close: bool, expected: str
) -> None:
    async def misbehaving(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _after_first_publish(reader, writer, answer)
        if not close:
            await reader.read()

    async with RawBroker(misbehaving, acking) as broker:
        sink = make_sink("127.0.0.1", broker.port, status_topic="")
        await sink.open()
        try:
            result = await sink.send([reading(i) for i in range(5)])
            assert result.outcome is Outcome.RETRY
            assert expected in result.detail
            assert sink.status()["connected"] is False
            assert (await sink.send([reading(0)])).outcome is Outcome.ACCEPTED
            assert broker.connections == 2
        finally:
            await sink.close()


async def test_a_broker_that_never_acks_is_retry() -> None:
    async with RawBroker(silent) as broker:
        sink = make_sink("127.0.0.1", broker.port, status_topic="", timeout="0.3s")
        result = await send_once(sink, [reading(0)])
    assert result.outcome is Outcome.RETRY
    assert "no acknowledgement from 127.0.0.1 within 0.3s" in result.detail


async def test_a_send_cancelled_while_connecting_leaves_no_connection_open() -> None:
    closed = asyncio.Event()
    got_online = asyncio.Event()

    async def never_acks_online(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)  # the retained "online": never acknowledged
        got_online.set()
        while await reader.read(65536):
            pass
        closed.set()

    async with RawBroker(never_acks_online) as broker:
        sink = make_sink("127.0.0.1", broker.port)
        sending = asyncio.create_task(sink.send([reading(0)]))
        await asyncio.wait_for(got_online.wait(), 5)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await asyncio.wait_for(closed.wait(), 5)
        assert sink.status()["connected"] is False


@pytest.mark.parametrize(("code", "outcome", "text"), [(5, Outcome.AUTH, "Not authorized"),
                                                       (4, Outcome.AUTH, "Bad user name or password"),
                                                       (3, Outcome.RETRY, "Server unavailable")])  # fmt: skip
async def test_connack_codes(code: int, outcome: Outcome, text: str) -> None:
    async with RawBroker(silent, connack=bytes((0x20, 2, 0, code))) as broker:
        sink = make_sink("127.0.0.1", broker.port, username="gw", password="not-logged-123")
        result = await send_once(sink, [reading(0)])
    assert result.outcome is outcome
    assert f"{text} (CONNACK code {code})" in result.detail
    assert "not-logged-123" not in result.detail


async def test_a_broker_that_never_answers_pingreq_loses_the_connection() -> None:
    pings = 0

    async def ping_counter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bool) -> None:
        nonlocal pings
        while True:
            first, _ = await read_packet(reader)
            if first == 0xC0:
                pings += 1
                if answer:
                    writer.write(b"\xd0\x00")

    async def answering(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await ping_counter(r, w, True)

    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await ping_counter(r, w, False)

    async with RawBroker(answering) as broker:
        client = await connected(broker.port, keepalive=0.1)
        await until(lambda: pings >= 3)  # answered pings keep it alive
        assert client.connected
        await client.disconnect()
    pings = 0
    async with RawBroker(mute) as broker:
        client = await connected(broker.port, keepalive=0.1)
        reason = await asyncio.wait_for(client.lost, 5)
    assert reason == "no answer to PINGREQ within 0.15s (keepalive 0.1s)"
    assert pings == 1
    assert client.protocol is not None
    assert client.protocol.keepalive_wakeups <= 3  # send PINGREQ, check for an answer, give up: no busy loop
    with pytest.raises(ConnectionLost, match="PINGREQ"):
        await client.publish_many([("t", b"x")])


async def test_a_publish_from_the_broker_is_acknowledged_and_dropped() -> None:
    answers: list[bytes] = []

    async def pushy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x32\x06\x00\x01x\x00\x07p")  # QoS 1, topic "x", id 7, payload "p"
        writer.write(b"\x34\x05\x00\x01y\x00\x08")  # QoS 2, id 8, empty payload
        writer.write(b"\x30\x03\x00\x01z" + b"\x62\x02\x00\x08")  # QoS 0; then PUBREL 8
        for _ in range(3):
            first, body = await read_packet(reader)
            answers.append(bytes((first, len(body))) + body)
        await acking(reader, writer)

    async with RawBroker(pushy) as broker:
        client = await connected(broker.port)
        try:
            await until(lambda: len(answers) == 3)
            await client.publish_many([("t", b"still fine")], qos=1)
        finally:
            await client.disconnect()
    assert answers == [ack(0x40, 7), ack(0x50, 8), ack(0x70, 8)]  # PUBACK, PUBREC, PUBCOMP


async def test_bad_topics_and_qos_are_refused_before_anything_is_sent() -> None:
    async with RawBroker(acking) as broker:
        client = await connected(broker.port)
        try:
            for topic in ("", "a/+", "a/#", "a\x00b", "x" * 70_000):
                with pytest.raises(ValueError):
                    await client.publish_many([("ok", b"1"), (topic, b"2")])
            with pytest.raises(ValueError, match="QoS 3"):
                await client.publish_many([("ok", b"1")], qos=3)
            await client.publish_many([("ok", b"1")])
            assert client.connected
        finally:
            await client.disconnect()


# --- the parser is total ---------------------------------------------------------------------------------


# Packet-shaped pieces (any first byte, a short body) find more than raw bytes would: truncated bodies,
# the wrong length for a packet type, a PUBLISH without a topic or packet id.
_first_bytes = st.one_of(
    st.sampled_from([0x20, 0x30, 0x32, 0x34, 0x36, 0x40, 0x50, 0x62, 0x70, 0xD0]), st.integers(0, 255)
)
_packet_like = st.builds(lambda first, body: bytes((first, len(body))) + body, _first_bytes, st.binary(max_size=6))
_stream = st.lists(st.one_of(_packet_like, st.binary(max_size=8)), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_stream, st.lists(st.integers(0, 100), max_size=6))
async def test_any_bytes_from_the_broker_raise_only_protocol_error(stream: bytes, cuts: list[int]) -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    proto = MqttProtocol(loop, max_inflight=10, keepalive=60)
    transport, _ = await loop.connect_accepted_socket(lambda: proto, ours)
    try:
        connack = proto.send_connect(b"\x10\x00")
        proto.feed(CONNACK_OK)
        assert connack.done()
        proto.prefixes["t"] = b"\x00\x01t"
        batch = proto.enqueue([("t", b"a"), ("t", b"b")], qos=1, retain=False)
        bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
        try:
            for start, end in itertools.pairwise(bounds):
                proto.feed(stream[start:end])
        except ProtocolError:
            pass
        batch.future.cancel()
    finally:
        transport.abort()
        theirs.close()
