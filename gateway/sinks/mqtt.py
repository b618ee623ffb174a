"""The ``mqtt`` sink: readings to an MQTT broker, per reading (JSON) or as SenML packs.

Delivery is at-least-once: ``send`` reports ACCEPTED only when the broker has
acknowledged every publish of the batch (PUBACK for QoS 1, PUBCOMP for QoS 2;
``MqttPublisher.publish_many`` returns on exactly those; ``gateway/mqtt_wire.py``
says why the sink does not use aiomqtt). Anything else (broker gone, connection
dropped mid-batch, no acknowledgement in time) is RETRY and the core sends the
whole batch again, so a consumer may see duplicates but never a gap.

The gateway's status topic is retained: ``online`` on every connect, ``offline``
on a clean close, and ``offline`` as the Last Will for when the broker loses us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from gateway.config_types import Duration, SecretFile, resolve_secret
from gateway.encoding import EncodingError, dumps_compact, group_for_senml, reading_json, senml_pack
from gateway.fleet.identity import stored_identity
from gateway.frame import Frame, as_readings
from gateway.frame_encoding import SenMLFrameEncoder
from gateway.model import Reading
from gateway.mqtt_common import tls_context, topic_level
from gateway.mqtt_wire import ConnectionLost, ConnectRefused, MqttPublisher, MqttWireError, Will
from gateway.sink import Outcome, SendResult, Sink, SinkConfig, SinkHealth

log = logging.getLogger(__name__)

DEFAULT_TOPICS = {"per_reading": "{site}/{gateway}/{device}/{quantity}", "senml": "{site}/{gateway}/{device}"}
TOPIC_PLACEHOLDERS = {"per_reading": {"site", "gateway", "device", "quantity"}, "senml": {"site", "gateway", "device"}}
STATUS_PLACEHOLDERS = {"site", "gateway"}

# CONNACK codes meaning "fix the credentials": 3.1.1 return codes 4 and 5
# (134 and 135 are their MQTT 5 reason codes, should a broker send those).
_AUTH_CODES = {4, 5, 134, 135}
TOPIC_CACHE_MAX = 50_000  # topics remembered; past this (unbounded device names) the cache starts again


def template_fields(template: str) -> set[str]:
    """The placeholders of a ``str.format`` template; ValueError for anything but plain ``{name}``."""
    names = set()
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must be a plain name such as {{device}}")
        names.add(name)
    return names


def check_topic_template(template: str, allowed: set[str]) -> str:
    if not template:
        raise ValueError("a topic cannot be empty")
    literal = re.sub(r"\{[^}]*\}", "", template)
    if "+" in literal or "#" in literal:
        raise ValueError("a topic to publish to cannot contain the wildcards '+' or '#'")
    unknown = template_fields(template) - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder {', '.join('{' + u + '}' for u in sorted(unknown))}; "
            f"allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )
    return template


def default_client_id(gateway: str, sink: str, state_dir: Path | None) -> str:
    """``gateway-<name>-<sink>-<identity>``: two boxes of one cloned image share a name, and the broker
    would otherwise hand one connection to the other every time either reconnects (docs/fleet.md)."""
    identity = stored_identity(state_dir) if state_dir is not None else None
    return f"gateway-{gateway}-{sink}" + (f"-{identity.short}" if identity is not None else "")


class MQTTSinkConfig(SinkConfig):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default 1883, or 8883 with TLS")
    client_id: str | None = Field(default=None, description="default: gateway-<gateway name>-<sink name>-<identity>")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description='inline only as "${ENV_VAR}"')
    password_file: SecretFile | None = None
    password_env: str | None = None
    qos: Literal[0, 1, 2] = 1
    tls: bool = Field(default=False, description="implied by ca_file or cert_file")
    ca_file: Path | None = Field(default=None, description="default: the system trust store")
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(default=False, description="skip certificate and host name checks (testing only)")
    mode: Literal["per_reading", "senml"] = "per_reading"
    topic: str = Field(default="", validate_default=True, description="default depends on mode, see docs/sinks.md")
    status_topic: str = Field(default="{site}/{gateway}/status", description='"" disables the status topic')
    keepalive: int = Field(default=30, ge=5, le=3600)
    timeout: Duration = Field(default=30.0, gt=0, le=600, description="longest wait to connect or for a batch's acks")
    max_inflight: int = Field(default=100, ge=1, le=65535)

    # Field validators (not model validators): a model-level error message
    # would echo the whole section, password included, into the config error.
    @field_validator("password_file", "password_env")
    @classmethod
    def _one_password_source(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            others = [k for k in ("password", "password_file") if k != info.field_name and info.data.get(k)]
            if others:
                raise ValueError(f"set only one of password, password_file, password_env ({others[0]} is set too)")
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str, info: ValidationInfo) -> str:
        mode = info.data.get("mode", "per_reading")
        return check_topic_template(value or DEFAULT_TOPICS[mode], TOPIC_PLACEHOLDERS[mode])

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, value: str) -> str:
        return value and check_topic_template(value, STATUS_PLACEHOLDERS)

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None


class MQTTSink(Sink):
    config_model = MQTTSinkConfig

    def __init__(self, config: MQTTSinkConfig, *, site: str, gateway: str, state_dir: Path | None = None) -> None:
        super().__init__(config, site=site, gateway=gateway, state_dir=state_dir)
        self.cfg = config
        self._client: MqttPublisher | None = None
        self._password: str | None = None
        self._tls: ssl.SSLContext | None = None
        self._opened = False
        self._health = SinkHealth(self.name, log)
        self._topics: dict[tuple[str, ...], str] = {}
        self._senml = SenMLFrameEncoder()
        self.status_topic = (
            config.status_topic.format(site=topic_level(site), gateway=topic_level(gateway))
            if config.status_topic
            else ""
        )
        self.client_id = config.client_id or default_client_id(gateway, self.name, state_dir)

    # --- connection ------------------------------------------------------------------------

    async def open(self) -> None:
        """Read secrets and certificates, then try to connect; a dead broker is not an error here."""
        cfg = self.cfg
        self._password = resolve_secret(
            value=cfg.password.get_secret_value() if cfg.password else None,
            file=cfg.password_file,
            env=cfg.password_env,
            what=f"sinks.{self.name}.password",
        )
        if cfg.uses_tls:
            self._tls = await asyncio.to_thread(
                tls_context, ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file, insecure=cfg.insecure
            )
        self._opened = True
        await self._connection()

    async def _connection(self) -> MqttPublisher | SendResult:
        if self._client is not None and self._client.connected:
            return self._client
        if self._client is not None:
            self._client.abort()
            self._client = None
        cfg = self.cfg
        port = cfg.port or (8883 if cfg.uses_tls else 1883)
        client = MqttPublisher(
            cfg.host,
            port,
            client_id=self.client_id,
            username=cfg.username,
            password=self._password,
            will=Will(self.status_topic, b"offline", qos=1, retain=True) if self.status_topic else None,
            keepalive=cfg.keepalive,
            tls=self._tls,
            max_inflight=cfg.max_inflight,
        )
        try:
            await client.connect(cfg.timeout)
            if self.status_topic:
                async with asyncio.timeout(cfg.timeout):
                    await client.publish_many([(self.status_topic, b"online")], qos=1, retain=True)
        except (TimeoutError, MqttWireError, OSError) as exc:
            client.abort()
            outcome = Outcome.AUTH if isinstance(exc, ConnectRefused) and exc.code in _AUTH_CODES else Outcome.RETRY
            reason = str(exc) or type(exc).__name__
            if cfg.uses_tls and cfg.cert_file is None and isinstance(exc, (TimeoutError, ConnectionLost)):
                # A broker that requires a client certificate drops the connection after
                # the TLS 1.3 handshake: the client sees a reset before CONNACK, or a timeout.
                reason += " (if the broker requires a client certificate, set cert_file and key_file)"
            return self._outcome(SendResult(outcome, f"cannot connect to {cfg.host}:{port}: {reason}"))
        except BaseException:  # cancelled (shutdown) while connecting: no connection may stay open behind us
            client.abort()
            raise
        self._client = client
        log.info("sink %s: connected to %s as %s", self.name, cfg.host, self.client_id)
        return client

    # --- sending ---------------------------------------------------------------------------

    def _topic(self, r: Reading | Frame) -> str:
        """The topic of a reading, or of a frame's SenML pack (whose template has no {quantity})."""
        quantity = r.quantity if type(r) is Reading else ""
        key = (r.site, r.gateway, r.device, quantity)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) >= TOPIC_CACHE_MAX:
                self._topics.clear()
            topic = self.cfg.topic.format(
                site=topic_level(r.site),
                gateway=topic_level(r.gateway),
                device=topic_level(r.device),
                quantity=topic_level(quantity),
            )
            self._topics[key] = topic
        return topic

    def encode(self, batch: Sequence[Reading]) -> list[tuple[str, bytes]]:
        """(topic, payload) for every message of the batch, in batch order."""
        if self.cfg.mode == "senml":
            return [(self._topic(group[0]), dumps_compact(senml_pack(group))) for group in group_for_senml(batch)]
        return [(self._topic(r), reading_json(r)) for r in batch]

    def encode_frames(self, frames: Sequence[Frame]) -> list[tuple[str, bytes]]:
        """``encode(as_readings(frames))``, byte for byte; a SenML pack costs one format per frame."""
        if self.cfg.mode == "senml":
            return [(self._topic(first), payload) for first, payload in self._senml.packs(frames)]
        return self.encode(as_readings(frames))

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        if not batch:
            return SendResult.ok()
        try:
            messages = self.encode(batch)
        except EncodingError as exc:
            return SendResult(Outcome.REJECTED, str(exc))
        return await self._publish(messages)

    async def send_frames(self, frames: Sequence[Frame]) -> SendResult:
        try:
            messages = self.encode_frames(frames)
        except EncodingError as exc:
            return SendResult(Outcome.REJECTED, str(exc))
        if not messages:
            return SendResult.ok()
        return await self._publish(messages)

    async def _publish(self, messages: list[tuple[str, bytes]]) -> SendResult:
        """Publish every message; ACCEPTED once the broker has acknowledged them all."""
        if not self._opened:
            await self.open()
        client = await self._connection()
        if isinstance(client, SendResult):
            return client
        try:
            async with asyncio.timeout(self.cfg.timeout):
                await client.publish_many(messages, qos=self.cfg.qos)
        except TimeoutError:
            problem = f"no acknowledgement from {self.cfg.host} within {self.cfg.timeout:g}s"
        except ConnectionLost as exc:
            problem = f"connection to {self.cfg.host} lost mid-batch: {exc}"
        except ValueError as exc:  # a topic or payload MQTT cannot carry: resending cannot help
            return self._outcome(SendResult(Outcome.REJECTED, str(exc)))
        else:
            return self._outcome(SendResult.ok())
        # Reconnect on the next send; the whole batch is resent (at-least-once).
        self._client = None
        client.abort()
        return self._outcome(SendResult(Outcome.RETRY, problem))

    def _outcome(self, result: SendResult) -> SendResult:
        return self._health.record(result)

    async def close(self) -> None:
        """Publish ``offline`` (retained) and disconnect cleanly, so the Will is not needed."""
        client, self._client = self._client, None
        if client is None:
            return
        if self.status_topic and client.connected:
            with contextlib.suppress(MqttWireError, TimeoutError):
                async with asyncio.timeout(5):
                    await client.publish_many([(self.status_topic, b"offline")], qos=1, retain=True)
        await client.disconnect(timeout=5)

    def status(self) -> dict[str, Any]:
        return {
            "host": self.cfg.host,
            "connected": self._client is not None and self._client.connected,
            **self._health.status(),
        }
