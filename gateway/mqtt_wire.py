"""A lean MQTT 3.1.1 publisher for the mqtt sink's hot path: batches of PUBLISH at QoS 0, 1 or 2.

Why not aiomqtt (still used by the LoRaWAN driver, the fleet agent, the tests
and the simulators): one QoS 1 publish through aiomqtt and paho cost 60-112 us
of CPU at 3 KB and 80-134 us at 25 KB (``bench/bench_mqtt_publish.py``, a real
Mosquitto on loopback, two runs on a shared 2-core VM). A profile put ~44 % of
it in paho's PUBACK handling (a ``ReasonCode`` and a ``Properties`` object per
ack, ``on_publish`` under a lock) and ~35 % in paho's ``publish`` (an
``MQTTMessage``, a mutex, logging), plus aiomqtt's future and ``wait_for`` per
message. This module costs 4.0-4.4 us a message at 3 KB and 7.4-14.8 us at
25 KB on the same bench and runs (it prints both clients). Here a batch is
one future, whatever its size: each PUBLISH is a ``b"".join`` of a cached
topic prefix, a header and the payload; the packets of a window go out in one
``transport.write``; an ack is one ``struct.unpack_from`` and a dict pop; the
batch's future completes when its last ack arrives, or fails when the
connection is lost.

What it keeps of the protocol, and how it fails:

- CONNECT with a clean session, keepalive, user name and password, a Will;
  a refusing CONNACK raises ``ConnectRefused(code)``;
- packet ids 1..65535, never one still in flight; at most ``max_inflight``
  unacknowledged PUBLISH at once (PUBACK for QoS 1, PUBREC -> PUBREL ->
  PUBCOMP for QoS 2); the transport's flow control pauses the sending;
- PINGREQ after ``keepalive`` s without sending; no byte from the broker
  for 1.5 x ``keepalive`` after it loses the connection;
- every way of losing the connection (EOF, reset, keepalive, bytes that are
  no MQTT packet the broker may send us) resolves ``lost`` with the reason
  and fails the pending batches with ``ConnectionLost``: the caller resends.
  A PUBLISH from the broker (we subscribe to nothing) is acknowledged and
  dropped; an ack for an unknown packet id is ignored.
- ``disconnect`` sends DISCONNECT, so the broker drops the Will.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

__all__ = [
    "ConnectRefused",
    "ConnectionLost",
    "MqttProtocol",
    "MqttPublisher",
    "MqttWireError",
    "ProtocolError",
    "Will",
]

_ACK = struct.Struct(">BBH")  # first byte, remaining length (2), packet id
_PID = struct.Struct(">H")
_HEAD2 = struct.Struct(">BBB")  # first byte and a two-byte remaining length
_PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 0x40, 0x50, 0x62, 0x70
_CONNACK, _PINGRESP = 0x20, 0xD0
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_MAX_REMAINING = 268_435_455  # the largest remaining length four bytes can say
_MAX_INCOMING = 1 << 20  # we subscribe to nothing: a larger packet from the broker is not one we expect
_CHUNK = 1 << 16  # bytes gathered before a write, so flow control can stop a QoS 0 batch in time
TOPIC_CACHE_MAX = 50_000  # encoded topic prefixes remembered; past this the cache starts again

CONNACK_CODES = {
    1: "Unacceptable protocol version",
    2: "Identifier rejected",
    3: "Server unavailable",
    4: "Bad user name or password",
    5: "Not authorized",
}


class MqttWireError(Exception):
    """Base of this module's errors."""


class ConnectRefused(MqttWireError):
    """The broker answered CONNECT with a non-zero return code (4 and 5: fix the credentials)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"connection refused: {CONNACK_CODES.get(code, 'unknown reason')} (CONNACK code {code})")


class ConnectionLost(MqttWireError):
    """The connection ended before the batch was acknowledged; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ProtocolError(MqttWireError):
    """Bytes from the broker that are not an MQTT packet it may send to a publisher."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _varint(n: int) -> bytes:
    """An MQTT remaining length: 7 bits a byte, low bits first."""
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _string(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"an MQTT string is at most 65535 bytes, not {len(value)}")
    return _PID.pack(len(value)) + value


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def connect_packet(
    client_id: str, *, keepalive: int, username: str | None, password: str | None, will: Will | None
) -> bytes:
    """CONNECT with a clean session (the gateway's buffer resends; no broker-side session is needed).

    As paho does, a password without a user name is not sent (3.1.1 forbids it).
    """
    flags = 0x02
    payload = [_string(client_id.encode())]
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += [_string(will.topic.encode()), _string(will.payload)]
    if username is not None:
        flags |= 0x80
        payload.append(_string(username.encode()))
        if password is not None:
            flags |= 0x40
            payload.append(_string(password.encode()))
    header = b"\x00\x04MQTT\x04" + bytes((flags,)) + _PID.pack(keepalive)
    return _packet(0x10, header + b"".join(payload))


class _Batch:
    __slots__ = ("first", "future", "messages", "next", "qos", "unacked")

    def __init__(self, messages: Sequence[tuple[str, bytes]], qos: int, retain: bool, future: asyncio.Future[None]):
        self.messages = messages
        self.first = 0x30 | qos << 1 | retain  # PUBLISH, its QoS and retain flag
        self.qos = qos
        self.next = 0  # index of the next message to send
        self.unacked = len(messages) if qos else 0
        self.future = future


class MqttProtocol(asyncio.Protocol):
    """One connection: sends the queued batches' PUBLISH packets, parses what the broker sends back.

    ``feed`` is the parser (``data_received`` minus the error handling): it raises
    ``ProtocolError`` for bytes a broker may not send, and nothing else.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_inflight: int, keepalive: float) -> None:
        self._loop = loop
        self._max_inflight = max_inflight
        self._keepalive = keepalive
        self.lost: asyncio.Future[str] = loop.create_future()  # resolves with the reason
        self.closed: asyncio.Future[None] = loop.create_future()  # the transport is gone
        self.connack: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.prefixes: dict[str, bytes] = {}  # topic -> its length-prefixed UTF-8, as a PUBLISH carries it
        self.unknown_acks = 0  # acks for no packet id in flight (ignored)
        self.keepalive_wakeups = 0  # the keepalive timer's: at most a few per keepalive period
        self._buffer = b""
        self._connected = False  # CONNACK accepted
        self._queue: collections.deque[_Batch] = collections.deque()  # batches with messages still to send
        self._inflight: dict[int, _Batch] = {}  # packet id -> its batch, until PUBACK / PUBCOMP
        self._pid = 0
        self._paused = False
        self._last_sent = loop.time()
        self._received = 0  # data_received calls: any byte from the broker answers a PINGREQ
        self._ping: tuple[float, int] | None = None  # when the PINGREQ out went, and _received then
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: other event loops' transports (uvloop's) are not subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost ({exc})" if exc else "connection closed by the broker")
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        self._received += 1
        try:
            self.feed(data)
        except ProtocolError as exc:
            self._lose(f"protocol violation by the broker: {exc}")

    # --- parsing ------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        pos = 0
        acked = False
        inflight = self._inflight
        control: list[bytes] = []  # PUBREL, and acks for PUBLISH from the broker
        while size - pos >= 2:
            if size - pos >= 4:
                first, length, pid = _ACK.unpack_from(buf, pos)
                if length == 2 and first in (_PUBACK, _PUBCOMP) and self._connected:  # the hot path
                    pos += 4
                    batch = inflight.pop(pid, None)
                    if batch is None:
                        self.unknown_acks += 1
                        continue
                    batch.unacked -= 1
                    if not batch.unacked and not batch.future.done():
                        batch.future.set_result(None)
                    acked = True
                    continue
            first = buf[pos]
            length, start = self._remaining_length(buf, pos + 1, size)
            if start < 0:
                break  # the length itself is still on its way
            end = start + length
            if end > size:
                break
            self._packet(first, buf, start, end, control)
            if self.lost.done():  # a refusing CONNACK ended the connection
                self._buffer = b""
                return
            pos = end
        self._buffer = buf[pos:] if pos < size else b""
        if control and self.transport is not None:
            self._write(b"".join(control))
        if acked:
            self._pump()

    @staticmethod
    def _remaining_length(buf: bytes, at: int, size: int) -> tuple[int, int]:
        """(remaining length, index of the body), or (0, -1) if more bytes are needed."""
        value = shift = 0
        for i in range(at, min(at + 4, size)):
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > _MAX_INCOMING:
                    raise ProtocolError(f"a packet of {value} bytes")
                return value, i + 1
            shift += 7
        if size - at >= 4:
            raise ProtocolError("a remaining length longer than four bytes")
        return 0, -1

    def _packet(self, first: int, buf: bytes, start: int, end: int, control: list[bytes]) -> None:
        """Any packet but a PUBACK or PUBCOMP once connected (``feed`` handles those inline)."""
        length = end - start
        if not self._connected:
            if first != _CONNACK or length != 2 or buf[start] & 0xFE:
                raise ProtocolError(f"expected CONNACK, got {bytes(buf[start - 2 : end][:8]).hex()}")
            code = buf[start + 1]
            if self.connack is None or self.connack.done():
                raise ProtocolError("a CONNACK nobody waits for")
            if code:
                refused = ConnectRefused(code)
                self.connack.set_exception(refused)
                self._lose(str(refused))
                return
            self._connected = True
            self.connack.set_result(None)
            return
        # (PUBACK and PUBCOMP never get here: ``feed`` takes every well-formed one once connected)
        if first == _PUBREC and length == 2:
            control.append(b"\x62\x02" + buf[start:end])  # PUBREL; the message stays in flight until PUBCOMP
        elif first == _PUBREL and length == 2:
            control.append(b"\x70\x02" + buf[start:end])  # PUBCOMP for a QoS 2 PUBLISH from the broker
        elif first == _PINGRESP and length == 0:
            pass  # any byte counts as an answer (``_received``)
        elif first >> 4 == 3:
            self._incoming_publish(first, buf, start, end, control)
        else:
            raise ProtocolError(f"unexpected packet {bytes(buf[start - 2 : end][:8]).hex()}")

    @staticmethod
    def _incoming_publish(first: int, buf: bytes, start: int, end: int, control: list[bytes]) -> None:
        """We subscribe to nothing; a broker may still route something to us: acknowledge it, drop it."""
        qos = first >> 1 & 3
        if qos == 3:
            raise ProtocolError("a PUBLISH with QoS 3")
        if end - start < 2:
            raise ProtocolError("a PUBLISH without a topic")
        (topic_length,) = _PID.unpack_from(buf, start)
        pid_at = start + 2 + topic_length
        if qos and pid_at + 2 > end:
            raise ProtocolError("a PUBLISH shorter than its topic and packet id")
        if qos == 1:
            control.append(b"\x40\x02" + buf[pid_at : pid_at + 2])
        elif qos == 2:
            control.append(b"\x50\x02" + buf[pid_at : pid_at + 2])

    # --- sending ------------------------------------------------------------------------------------------

    def send_connect(self, packet: bytes) -> asyncio.Future[None]:
        self.connack = self._loop.create_future()
        self._write(packet)
        self._arm(self._last_sent + self._keepalive)
        return self.connack

    def enqueue(self, messages: Sequence[tuple[str, bytes]], qos: int, retain: bool) -> _Batch:
        """Queue a batch (every topic already in ``prefixes``); its future completes once all are acked."""
        batch = _Batch(messages, qos, retain, self._loop.create_future())
        if self.lost.done():
            batch.future.set_exception(ConnectionLost(self.lost.result()))
            return batch
        self._queue.append(batch)
        self._pump()
        return batch

    def forget(self, batch: _Batch) -> None:
        """A batch whose caller gave up: send no more of it; acks for what went out are still awaited."""
        with contextlib.suppress(ValueError):
            self._queue.remove(batch)
        batch.future.cancel()

    def _pump(self) -> None:
        """Send queued PUBLISH packets while the in-flight window has room and the transport is not paused."""
        if self._paused or self.transport is None or not self._queue:
            return
        queue, inflight, prefixes = self._queue, self._inflight, self.prefixes
        room = self._max_inflight - len(inflight)
        pieces: list[bytes] = []
        size = 0
        pid = self._pid
        while queue and not self._paused:
            batch = queue[0]
            qos, first, messages = batch.qos, batch.first, batch.messages
            i, n = batch.next, len(messages)
            while i < n:
                if qos:
                    if room <= 0:
                        break
                    while True:
                        pid = pid + 1 if pid < 0xFFFF else 1
                        if pid not in inflight:
                            break
                    inflight[pid] = batch
                    room -= 1
                topic, payload = messages[i]
                i += 1
                prefix = prefixes[topic]
                body = len(prefix) + len(payload) + (2 if qos else 0)
                if body < 0x80:
                    head = bytes((first, body))
                elif body < 0x4000:
                    head = _HEAD2.pack(first, body & 0x7F | 0x80, body >> 7)
                else:
                    head = bytes((first,)) + _varint(body)
                if qos:
                    pieces += (head, prefix, _PID.pack(pid), payload)
                else:
                    pieces += (head, prefix, payload)
                size += body
                if size >= _CHUNK:
                    self._pid = pid
                    self._write(b"".join(pieces))  # may call pause_writing
                    pieces.clear()
                    size = 0
                    if self._paused or self.transport is None:
                        break
            batch.next = i
            if i < n:
                break  # the window is full or the transport paused
            queue.popleft()
            if not qos and not batch.future.done():
                batch.future.set_result(None)  # QoS 0: done once handed to the transport
        self._pid = pid
        if pieces and self.transport is not None:
            self._write(b"".join(pieces))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self._last_sent = self._loop.time()

    # --- keepalive ----------------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        """One timer per connection, re-armed lazily: at the next moment a PINGREQ or its answer is due."""
        self._timer = None
        self.keepalive_wakeups += 1
        if self.transport is None or self.lost.done():
            return
        now, keepalive = self._loop.time(), self._keepalive
        if self._ping is not None:
            sent_at, received = self._ping
            if self._received != received:
                self._ping = None  # the broker said something since: it is alive
            elif now >= sent_at + 1.5 * keepalive - 1e-3:
                self._lose(f"no answer to PINGREQ within {1.5 * keepalive:g}s (keepalive {keepalive:g}s)")
                return
        if self._ping is None and now >= self._last_sent + keepalive - 1e-3:
            self._write(_PINGREQ)
            self._ping = (now, self._received)
        if self._ping is None:
            self._arm(self._last_sent + keepalive)
        else:  # look again when the next PINGREQ would be due (if this one was answered), then at its deadline
            sent_at = self._ping[0]
            self._arm(sent_at + keepalive if now < sent_at + keepalive - 1e-3 else sent_at + 1.5 * keepalive)

    # --- ending -------------------------------------------------------------------------------------------

    def _lose(self, reason: str) -> None:
        """The connection is over: say why once, fail every pending batch, drop the transport."""
        if not self.lost.done():
            self.lost.set_result(reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.connack is not None and not self.connack.done():
            self.connack.set_exception(ConnectionLost(f"{reason} before CONNACK"))
        error = ConnectionLost(reason)
        for batch in (*self._queue, *self._inflight.values()):
            if not batch.future.done():
                batch.future.set_exception(error)
        self._queue.clear()
        self._inflight.clear()
        if self.transport is not None:
            self.transport.abort()

    def disconnect(self) -> None:
        """DISCONNECT (the broker then drops the Will) and a graceful close that flushes what is buffered."""
        transport = self.transport
        if transport is not None and not self.lost.done():
            if self._connected:
                transport.write(_DISCONNECT)
            self.transport = None  # _lose must not abort: close() flushes first
            self._lose("closed by the gateway")
            transport.close()
        else:
            self._lose("closed by the gateway")

    def abort(self, reason: str) -> None:
        self._lose(reason)

    @property
    def writing_paused(self) -> bool:
        return self._paused

    @property
    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0


class MqttPublisher:
    """Publishes batches to one broker over one connection; a new instance for each reconnection.

    ``connect`` raises ``ConnectRefused``, ``ConnectionLost``, ``OSError`` (``ssl.SSLError``
    included) or ``TimeoutError``; ``publish_many`` raises ``ConnectionLost`` or, for a topic
    or payload MQTT cannot carry, ``ValueError`` before sending anything.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        keepalive: float = 60,
        tls: ssl.SSLContext | None = None,
        max_inflight: int = 100,
    ) -> None:
        if not 1 <= max_inflight <= 0xFFFF:
            raise ValueError("max_inflight must be 1..65535")
        self.host, self.port = host, port
        self._client_id, self._username, self._password, self._will = client_id, username, password, will
        self._keepalive = keepalive
        self._tls = tls
        self._max_inflight = max_inflight
        self._proto: MqttProtocol | None = None

    @property
    def lost(self) -> asyncio.Future[str]:
        """Resolves with the reason once the connection is over (never an exception)."""
        if self._proto is None:
            raise RuntimeError("not connected yet")
        return self._proto.lost

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.lost.done()

    @property
    def protocol(self) -> MqttProtocol | None:
        return self._proto

    async def connect(self, timeout: float) -> None:
        """TCP, the TLS handshake and CONNACK, all within ``timeout``."""
        loop = asyncio.get_running_loop()
        proto = MqttProtocol(loop, max_inflight=self._max_inflight, keepalive=self._keepalive)
        # Sent rounded up: the broker's limit is then never shorter than our own PINGREQ period.
        keepalive = min(0xFFFF, -int(-self._keepalive // 1))
        packet = connect_packet(
            self._client_id, keepalive=keepalive, username=self._username, password=self._password, will=self._will
        )
        stage = "the TLS handshake" if self._tls is not None else "the TCP connection"
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: proto,
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
                stage = "CONNACK"
                await proto.send_connect(packet)
        except TimeoutError:
            proto.abort("connect timed out")
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {stage}") from None
        except OSError as exc:
            proto.abort("connect failed")
            if exc.errno and str(exc.strerror).startswith("Connect call failed"):
                # asyncio's text names the address we already name; the errno's text says what happened
                raise type(exc)(exc.errno, os.strerror(exc.errno)) from exc
            raise
        except BaseException:
            proto.abort("connect failed")
            raise
        self._proto = proto

    async def publish_many(self, messages: Sequence[tuple[str, bytes]], qos: int = 1, retain: bool = False) -> None:
        """Publish (topic, payload) pairs in order; returns once the broker has acknowledged every one
        (QoS 1 and 2) or once all are handed to the transport (QoS 0)."""
        proto = self._proto
        if proto is None:
            raise ConnectionLost("not connected")
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS {qos} is not 0, 1 or 2")
        prefixes = proto.prefixes
        if len(prefixes) > TOPIC_CACHE_MAX:
            prefixes.clear()
        for topic, payload in messages:  # checked before anything is sent: no half-sent batch on bad input
            if topic not in prefixes:
                encoded = topic.encode()
                if not encoded or "+" in topic or "#" in topic or "\x00" in topic:
                    raise ValueError(f"cannot publish to the topic {topic!r}")
                prefixes[topic] = _string(encoded)
            if len(payload) > _MAX_REMAINING - 0x10005:
                raise ValueError(f"a payload of {len(payload)} bytes is more than an MQTT packet can carry")
        if not messages:
            return
        batch = proto.enqueue(messages, qos, retain)
        try:
            await batch.future
        except asyncio.CancelledError:
            proto.forget(batch)
            raise

    async def disconnect(self, timeout: float = 5.0) -> None:
        """DISCONNECT and close, waiting up to ``timeout`` for the buffered bytes to leave."""
        proto = self._proto
        if proto is None:
            return
        proto.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(proto.closed)

    def abort(self, reason: str = "aborted by the gateway") -> None:
        """Drop the connection at once (no DISCONNECT: the broker publishes the Will)."""
        if self._proto is not None:
            self._proto.abort(reason)
