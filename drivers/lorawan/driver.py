"""LoRaWAN driver: uplinks from a ChirpStack v4 or The Things Stack v3 MQTT integration.

Flow per batch of MQTT messages: parse (``events``) -> drop duplicates
(``dedup``) -> decode (server object or codec) -> ``await emit(readings)`` ->
acknowledge the messages. Acknowledging only after the buffer commit is what
makes a kill -9 lossless: the broker keeps unacknowledged QoS 1 messages of a
persistent session and sends them again when we reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import aiomqtt

from gateway.buffer import RejectedMessage
from gateway.config_types import resolve_secret
from gateway.driver import DeviceCatalogue, DriverContext, Emit, PushDriver, SourceConfig
from gateway.drivers.lorawan.codecs import DecodeResult
from gateway.drivers.lorawan.config import LoRaWANConfig
from gateway.drivers.lorawan.dedup import Deduplicator, Key
from gateway.drivers.lorawan.devices import DeviceTable, ResolvedDevice
from gateway.drivers.lorawan.events import PARSERS, EventError, Join, Status, Uplink
from gateway.drivers.lorawan.readings import object_values, status_readings, uplink_readings
from gateway.model import Reading
from gateway.scheduling import Backoff


def default_topics(config: LoRaWANConfig) -> list[str]:
    app = config.application
    if config.server == "chirpstack":
        return [f"application/{app}/device/+/event/{event}" for event in ("up", "status", "join")]
    return [f"v3/{app}/devices/+/up", f"v3/{app}/devices/+/join"]


def _enable_manual_ack(client: aiomqtt.Client) -> None:
    # aiomqtt 2.x has no public switch for manual acknowledgement; paho-mqtt 2.x
    # (which aiomqtt wraps as ``_client``) has ``manual_ack_set`` and ``ack``.
    # This and ``_ack`` below are the only places touching the internal client.
    client._client.manual_ack_set(True)


def _ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    if message.qos > 0:
        # On a dead connection this is a no-op; the broker then redelivers, and
        # the deduplicator (which remembered the committed uplink) drops it.
        client._client.ack(message.mid, message.qos)


class LoRaWANDriver(PushDriver):
    config_model: ClassVar[type[SourceConfig]] = LoRaWANConfig
    config: LoRaWANConfig

    def __init__(self, config: SourceConfig, ctx: DriverContext) -> None:
        assert isinstance(config, LoRaWANConfig)
        super().__init__(config, ctx)
        self._devices = DeviceTable(config)
        self._dedup = Deduplicator(window_s=config.dedup_window, max_entries=config.dedup_max_entries)
        self._parse = PARSERS[config.server]
        self._broker = f"mqtt://{config.host}:{config.port}"
        self._password: str | None = None
        self._warned: set[str] = set()
        self.counters: dict[str, int] = {
            "messages": 0,
            "uplinks": 0,
            "duplicates": 0,
            "rejected": 0,
            "readings": 0,
            "acknowledged": 0,
        }

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        assert isinstance(config, LoRaWANConfig)
        DeviceTable(config)  # raises ValueError naming devices[i].codec / .profile

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue:
        assert isinstance(config, LoRaWANConfig)
        # Quantities depend on the codec and the payloads; unlisted devices are named by their DevEUI.
        devices: dict[str, frozenset[str] | None] = {d.name or d.id.lower(): None for d in config.devices}
        return DeviceCatalogue(devices, open=config.accept_unknown_devices)

    async def start(self) -> None:
        self._password = resolve_secret(
            value=None,
            file=self.config.password_file,
            env=self.config.password_env,
            what=f"{self.config.name}.password",
        )

    def status(self) -> dict[str, Any]:
        return {"broker": self._broker, "connected": not self.ctx.is_down(self._broker), **self.counters}

    # --- connection -------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=self._password,
            identifier=cfg.client_id or f"gateway-{self.ctx.gateway}-{cfg.name}",
            clean_session=not cfg.persistent_session,
            tls_params=aiomqtt.TLSParameters() if cfg.tls else None,
            keepalive=30,
            logger=logging.getLogger(f"{self.ctx.logger.name}.mqtt"),
        )
        if cfg.qos > 0:
            _enable_manual_ack(client)
        return client

    async def run(self, emit: Emit) -> None:
        backoff = Backoff(initial_s=0.5, cap_s=30.0)
        topics = self.config.topics or default_topics(self.config)
        while True:
            try:
                async with self._client() as client:
                    for topic in topics:
                        await client.subscribe(topic, qos=self.config.qos)
                    self.ctx.device_up(self._broker)
                    backoff.reset()
                    await self._consume(client, emit)
            except aiomqtt.MqttError as exc:
                self.ctx.count_error("connection")
                self.ctx.device_down(self._broker, str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff.next_delay())

    async def _consume(self, client: aiomqtt.Client, emit: Emit) -> None:
        messages = client.messages
        while True:
            batch = [await anext(messages)]
            while len(messages) > 0 and len(batch) < self.config.batch_max:
                batch.append(await anext(messages))
            await self.handle_batch(batch, emit)
            for message in batch:
                _ack(client, message)
            self.counters["acknowledged"] += len(batch)

    # --- processing -------------------------------------------------------

    async def handle_batch(self, batch: Sequence[aiomqtt.Message], emit: Emit) -> None:
        """Parse, deduplicate and decode a batch, then commit it (does not ack).

        A message that cannot be used is rejected (counted and kept in the
        buffer) rather than raised: it is then acknowledged with the others, so
        a poison message is never redelivered forever ahead of good uplinks.
        """
        readings: list[Reading] = []
        remembered: list[list[Key]] = []
        rejected: list[RejectedMessage] = []
        for message in batch:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            readings.extend(self.process_or_reject(message.topic.value, payload, remembered, rejected))
        await self.ctx.keep_rejected(rejected)  # one buffer write for a batch full of garbage
        if not readings:
            return
        try:
            await emit(readings)
        except BaseException:
            # Not committed: the messages stay unacknowledged and come back, so
            # they must not be taken for duplicates then.
            for keys in remembered:
                self._dedup.forget(keys)
            raise
        self.counters["readings"] += len(readings)

    def process_or_reject(
        self, topic: str, payload: bytes, remembered: list[list[Key]], rejected: list[RejectedMessage]
    ) -> list[Reading]:
        """``process``; a message it refuses or fails on is counted and added to ``rejected``."""
        try:
            return self.process(topic, payload, remembered)
        except EventError as exc:
            kind, detail = exc.kind, exc.detail
        except Exception as exc:  # a parsing bug must cost this message, not a crash loop
            kind, detail = "decode_failed", f"{type(exc).__name__}: {exc}"
            if kind not in self._warned:  # the traceback once; then like any other problem kind
                self._warned.add(kind)
                self.ctx.logger.exception("%s: cannot process this message; it is kept as rejected", topic)
        self.counters["rejected"] += 1
        self._log_problem(kind, f"{topic}: {detail}"[:300])
        parts = topic.split("/")  # .../device/{devEui}/event/up, v3/{app}/devices/{device_id}/up
        device = parts[3] if len(parts) > 4 else ""
        rejected.append(self.ctx.rejection(payload, kind, f"{topic}: {detail}"[:1000], device=device[:64]))
        return []

    def process(self, topic: str, payload: bytes, remembered: list[list[Key]]) -> list[Reading]:
        """One message -> readings; raises EventError for a message that cannot be used."""
        self.counters["messages"] += 1
        event = self._parse(topic, payload)
        if event is None:
            return []
        if isinstance(event, Join):
            self._dedup.joined(event.ids.key)
            return []
        device = self._devices.lookup(event.ids)
        if device is None:
            self._problem("unknown_device", f"{topic}: {event.ids.key} is not in devices")
            return []
        base_tags = {**self.config.tags, **device.tags}
        if isinstance(event, Status):
            return status_readings(self.ctx, device=device.name, status=event, base_tags=base_tags)
        duplicate, keys = self._dedup.is_duplicate(event)
        if duplicate:
            self.counters["duplicates"] += 1
            self.ctx.count_error("duplicate")
            return []
        values = self._decode(device, event)
        for kind in values.problems:
            self._problem(kind, f"{topic}: device {device.name} fPort {event.f_port}")
        out = uplink_readings(
            self.ctx, device=device.name, uplink=event, values=values, base_tags=base_tags, radio=self.config.radio
        )
        # Remembered only once it decoded: a message that failed is not a duplicate of anything.
        self._dedup.remember(keys, event.time_ns)
        remembered.append(keys)
        self.counters["uplinks"] += 1
        return out

    def _decode(self, device: ResolvedDevice, uplink: Uplink) -> DecodeResult:
        if self.config.use_server_decoded and uplink.decoded is not None and device.object_fields:
            return object_values(uplink.decoded, device.object_fields)
        if uplink.payload is None:
            return DecodeResult()
        if device.f_ports and uplink.f_port and uplink.f_port not in device.f_ports:
            return DecodeResult()  # e.g. a configuration answer on another port: no measurements
        codec = self._devices.codec_for(device, uplink.f_port)
        if codec is None:
            return DecodeResult(problems=["no_codec"])
        try:
            return codec.decode(uplink.payload, uplink.f_port)
        except Exception:  # a third-party codec bug loses this payload, not the driver
            self.ctx.logger.exception("codec %s failed on device %s", type(codec).__name__, device.name)
            return DecodeResult(problems=["codec_failed"])

    def _problem(self, kind: str, detail: str) -> None:
        self.ctx.count_error(kind)
        self._log_problem(kind, detail)

    def _log_problem(self, kind: str, detail: str) -> None:
        # First occurrence of each kind at warning level, then debug: a broken
        # device must not flood the log with one line per uplink.
        if kind not in self._warned:
            self._warned.add(kind)
            self.ctx.logger.warning("%s (%s); further ones are counted, logged at debug level", kind, detail)
        else:
            self.ctx.logger.debug("%s (%s)", kind, detail)
