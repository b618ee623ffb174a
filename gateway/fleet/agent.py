"""The fleet agent: publishes this gateway's status on MQTT and its health as readings.

One task per daemon. Every second it builds the status document from the daemon's status; it
publishes it (retained, QoS 1) at once when a state changed and every ``status_interval`` anyway.
The broker connection is its own (``[fleet]``, docs/fleet.md) with a Last Will that says ``offline``;
a clean stop publishes ``stopped``, so a crash and a stop read differently. Connection trouble is
logged once on the way into failure and once on recovery, and never touches the data path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiomqtt

from gateway.aio import cancel_and_wait
from gateway.config_types import resolve_secret
from gateway.fleet.duplicates import DuplicateWatch
from gateway.fleet.health import HealthTracker, change_signature, health_readings
from gateway.fleet.identity import Identity
from gateway.fleet.settings import FleetSection
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.mqtt_common import tls_context, topic_level
from gateway.scheduling import Backoff

log = logging.getLogger("gateway.fleet")

TICK_S = 1.0

StatusSource = Callable[[], Mapping[str, Any]]
EmitReadings = Callable[[Sequence[Reading]], Awaitable[None]]


def status_topic(prefix: str, site: str, name: str, identity_id: str) -> str:
    return f"{prefix}/{topic_level(site)}/{topic_level(name)}/{identity_id}"


class FleetAgent:
    def __init__(
        self,
        settings: FleetSection,
        *,
        site: str,
        name: str,
        identity: Identity,
        config_digest: str | None,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.site = site
        self.name = name
        self.identity = identity
        self.metrics = metrics
        self.instance = uuid.uuid4().hex[:12]  # tells two processes with one identity apart
        self.tracker = HealthTracker(
            identity={"id": identity.id, "renewed_from": identity.renewed_from}, config_digest=config_digest
        )
        self.duplicates = DuplicateWatch(
            own_id=identity.id, name=name, site=site, hold_s=max(3 * settings.status_interval, 30.0)
        )
        self.topic = status_topic(settings.topic_prefix, site, name, identity.id)
        self.watch_topic = f"{settings.topic_prefix}/{topic_level(site)}/{topic_level(name)}/+"
        self.client_id = f"gateway-fleet-{identity.id}"
        self.connected = False
        self.published = 0
        self._client: aiomqtt.Client | None = None
        self._failing: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sessions = 0
        self._stopping = False

    # --- what the daemon sees -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """For status.json and ``gateway status``."""
        return {
            "id": self.identity.id,
            "instance": self.instance,
            "topic": self.topic if self.settings.host else None,
            "connected": self.connected,
            "error": self._failing,
            "duplicate": self.duplicate(),
        }

    def duplicate(self) -> dict[str, Any] | None:
        alarm = self.duplicates.active()
        self.metrics.duplicate_name.set(1 if alarm else 0)
        return alarm

    def document(self, status: Mapping[str, Any], state: str = "online") -> dict[str, Any]:
        doc = self.tracker.document(status, state=state, duplicate=self.duplicate())
        doc["instance"] = self.instance
        doc["status_interval_s"] = self.settings.status_interval
        return doc

    # --- the loops ----------------------------------------------------------------------------------

    def start(self, status: StatusSource, emit: EmitReadings) -> None:
        self._tasks = [asyncio.create_task(self._health_readings_forever(status, emit), name="fleet-health-readings")]
        if self.settings.host:
            self._tasks.append(asyncio.create_task(self._publish_forever(status), name="fleet-status"))

    async def stop(self, status: Mapping[str, Any]) -> None:
        """A clean stop: publish ``stopped`` (retained) so the control post tells it from a crash, then disconnect.

        The clean disconnect that follows makes the broker discard the Will.
        """
        self._stopping = True
        client = self._client
        if client is not None and self.connected:
            doc = self.document(status, state="stopped")
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                await client.publish(self.topic, json.dumps(doc).encode(), qos=1, retain=True, timeout=5)
        # aiomqtt's wait_for can swallow a cancellation: cancel_and_wait cancels again (gateway/aio.py)
        await cancel_and_wait({t.get_name(): t for t in self._tasks}, logger=log)
        self._tasks = []

    async def _health_readings_forever(self, status: StatusSource, emit: EmitReadings) -> None:
        if not self.settings.health_readings:
            return
        while True:  # one at start too: a box that restarts often still shows up in the store
            doc = self.document(status())
            try:
                await emit(health_readings(doc, site=self.site, gateway=self.name))
            except Exception:  # the buffer refused a commit; the next interval tries again
                log.exception("cannot hand the gateway's health readings to the buffer")
            await asyncio.sleep(self.settings.health_interval)

    async def _publish_forever(self, status: StatusSource) -> None:
        backoff = Backoff(initial_s=1.0, cap_s=60.0)
        while True:
            try:
                await self._session(status, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker, network, TLS files, a secret: never the end of the status
                self._connection_failed(exc)
            self.connected = False
            self.metrics.fleet_connected.set(0)
            self._client = None
            delay = backoff.next_delay()
            if self.duplicates.active() is not None:
                # Two boxes with one identity share one client id: each connect kicks the other off.
                # Reconnecting slowly keeps that from becoming a storm of takeovers.
                delay = max(delay, self.settings.status_interval)
            await asyncio.sleep(delay)

    def _connection_failed(self, exc: BaseException) -> None:
        summary = f"{type(exc).__name__}: {exc}"
        if self._failing != summary:
            log.error("fleet status: cannot publish to %s: %s; retrying with backoff", self.settings.host, summary)
        self._failing = summary

    async def _session(self, status: StatusSource, backoff: Backoff) -> None:
        s = self.settings
        will_doc = {
            "schema": "gateway-status/1", "state": "offline", "id": self.identity.id, "instance": self.instance,
            "site": self.site, "name": self.name, "started_ns": status().get("started_ns"),
        }  # fmt: skip
        password = resolve_secret(
            value=s.password.get_secret_value() if s.password else None,
            file=s.password_file,
            env=s.password_env,
            what="fleet.password",
        )
        tls = (
            await asyncio.to_thread(
                tls_context, ca_file=s.ca_file, cert_file=s.cert_file, key_file=s.key_file, insecure=s.insecure
            )
            if s.uses_tls
            else None
        )
        client = aiomqtt.Client(
            s.host or "",
            s.port or (8883 if s.uses_tls else 1883),
            identifier=self.client_id,
            username=s.username,
            password=password,
            will=aiomqtt.Will(self.topic, json.dumps(will_doc).encode(), qos=1, retain=True),
            clean_session=True,
            keepalive=s.keepalive,
            timeout=10,
            tls_context=tls,
            logger=log,
        )
        async with client:
            self._client = client
            self._sessions += 1
            self.connected = True
            self.metrics.fleet_connected.set(1)
            if self._failing is not None:
                log.warning("fleet status: publishing to %s again", s.host)
                self._failing = None
            else:
                log.info("fleet status: publishing to %s on %s", s.host, self.topic)
            await client.subscribe(self.watch_topic, qos=1)
            watcher = asyncio.create_task(self._watch(client), name="fleet-duplicate-watch")
            try:
                await self._publish_loop(client, status, backoff, watcher)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                doc = json.loads(message.payload if isinstance(message.payload, bytes | str) else b"")
            except (ValueError, TypeError):
                continue
            if not isinstance(doc, dict):
                continue
            if doc.get("id") == self.identity.id:
                if doc.get("instance") != self.instance and (self._sessions > 1 or not message.retain):
                    self._same_identity(doc)
                continue
            self.duplicates.observe(doc, retained=bool(message.retain))

    def _same_identity(self, doc: Mapping[str, Any]) -> None:
        """Another process publishes on our own topic: a box cloned with its state dir and machine-id.

        At the first connect the retained status there may be this box's previous run (its Will), so
        only a live message counts then; after that, our topic holds nothing but ours unless another
        process with our identity, and so our client id, took the connection over in between.
        """
        if self._sessions > 1:
            self.metrics.fleet_takeovers.inc()
        if self.duplicates.active() is not None:
            log.debug("status from instance %s under our identity again", doc.get("instance"))
        else:
            log.error(
                "another process publishes under this gateway's identity %s (instance %s, this one is %s): a "
                "box cloned with its state dir and machine-id. The two take each other's broker connection over. "
                "Delete identity.json in one box's state dir, give it its own name and restart it",
                self.identity.short,
                doc.get("instance"),
                self.instance,
            )
        rival = f"{self.identity.id[:8]}/{doc.get('instance')}"
        self.duplicates.observe({"id": rival, "state": "online"})

    async def _publish_loop(
        self, client: aiomqtt.Client, status: StatusSource, backoff: Backoff, watcher: asyncio.Task[None]
    ) -> None:
        last_sig: tuple[Any, ...] | None = None
        last_sent = 0.0
        while True:
            if watcher.done():
                watcher.result()  # raises the MqttError that ended the connection
                raise aiomqtt.MqttError("connection closed")
            doc = self.document(status())
            sig = change_signature(doc)
            now = time.monotonic()
            if self._stopping:  # stop() publishes the last word
                await asyncio.wait({watcher}, timeout=TICK_S)
                continue
            if sig != last_sig or now - last_sent >= self.settings.status_interval:
                # A publish on a link that died (a freeze, a cut) waits for its timeout; the watcher ends first.
                publish = asyncio.ensure_future(
                    client.publish(self.topic, json.dumps(doc).encode(), qos=1, retain=True, timeout=10)
                )
                await asyncio.wait({publish, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not publish.done():
                    publish.cancel()
                    await asyncio.gather(publish, return_exceptions=True)
                    continue  # the watcher's error ends the session at the top of the loop
                publish.result()
                self.published += 1
                self.metrics.fleet_status_published.inc()
                last_sig, last_sent = sig, now
                backoff.reset()
            await asyncio.wait({watcher}, timeout=TICK_S)
