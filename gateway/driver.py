"""The driver contract, small and phased.

``validate`` (classmethod, pure: no I/O; raise ``ConfigError``-compatible
``ValueError`` naming the problem) -> ``start`` -> ``poll()`` (``PolledDriver``,
scheduled by the core on aligned ticks) or ``run(emit)`` (``PushDriver``, for
streams and subscriptions) -> ``close``.

A driver that raises out of ``poll``/``run``/``start`` is closed and restarted
by the core with capped, jittered backoff and counted in
``gateway_driver_restarts_total``; it never takes down the daemon or another
driver. Per-field problems (one bad register, one corrupt frame) should not
raise: report them with ``ctx.count_error(kind)`` and carry on. A whole message
that cannot be decoded and that its source would redeliver (an MQTT uplink) is
refused with ``await ctx.reject(raw, kind, detail)``: counted, kept in the
buffer for inspection, and then acknowledged like a good one.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gateway.aggregate import AggregateConfig
from gateway.buffer_types import RejectedMessage
from gateway.config_types import Duration
from gateway.frame import Frame
from gateway.model import Quality, Reading, Value, make_reading, now_ns
from gateway.tags import EMPTY_TAGS


class Emit(Protocol):
    """Push readings into the pipeline.

    ``await emit(readings)`` returns once they are committed to the durable
    buffer, so a driver may acknowledge its source (an MQTT message, a modem
    frame) only after that. A source with nothing to acknowledge (a polled
    bus) passes ``wait_commit=False``: the call returns once the readings are
    queued for the next commit, so the source is never paced by the commit
    cadence (it waits only when the writer's bounded queue is full).
    """

    def __call__(self, readings: Sequence[Reading | Frame], /, *, wait_commit: bool = True) -> Awaitable[None]: ...


class SourceConfig(BaseModel):
    """Fields every source (driver instance) has; drivers subclass it."""

    model_config = ConfigDict(extra="forbid")

    driver: str
    name: str = Field(min_length=1, description="unique source name, used in logs and metrics")
    interval: Duration = Field(default=10.0, gt=0, description="poll interval (polled drivers)")
    enabled: bool = True
    tags: dict[str, str] = Field(default_factory=dict, description="tags added to every reading")
    aggregate: AggregateConfig | None = Field(
        default=None, description="send statistics per time window instead of every reading (gateway/aggregate.py)"
    )


@dataclass(frozen=True, slots=True)
class DeviceCatalogue:
    """The devices a source will name in its readings, as far as its config tells.

    Returned by the optional ``Driver.catalogue``; used to select a sink's readings by
    source (a Reading carries no source) and by ``gateway routes``. ``devices`` maps each
    device to its quantities (None: not known before readings arrive); ``patterns`` are
    globs of device names made up at run time (a node address); ``open`` says the source
    may name other devices still (a LoRaWAN source accepting unknown devices).
    """

    devices: Mapping[str, frozenset[str] | None]
    patterns: tuple[str, ...] = ()
    open: bool = False


async def _keep_nothing(items: Sequence[RejectedMessage]) -> None:
    """Default reject hook (unit tests without a buffer)."""


@dataclass(slots=True)
class DriverContext:
    """What the core hands a driver: identity, a reading factory and error counting."""

    site: str
    gateway: str
    source: str
    driver: str
    logger: logging.Logger
    state_dir: str = "."
    # Filled in by the core (gateway.runner) to reach the metrics; no-ops in unit tests.
    count_error_hook: Callable[[str, str, str], None] = field(default=lambda d, s, k: None)
    observe_poll_hook: Callable[[str, str, float], None] = field(default=lambda d, s, secs: None)
    device_up_hook: Callable[[str, str, str, bool], None] = field(default=lambda d, s, dev, up: None)
    reject_hook: Callable[[Sequence[RejectedMessage]], Awaitable[None]] = field(default=_keep_nothing)
    _down: dict[str, str] = field(default_factory=dict)
    _up: set[str] = field(default_factory=set)  # devices whose "up" the hook has been told (and not "down" since)

    def reading(
        self,
        device: str,
        quantity: str,
        value: Value,
        unit: str,
        *,
        ts_ns: int | None = None,
        tags: Mapping[str, str] | None = None,
        quality: Quality = Quality.GOOD,
    ) -> Reading:
        return make_reading(
            now_ns() if ts_ns is None else ts_ns,
            self.site,
            self.gateway,
            device,
            quantity,
            value,
            unit,
            tags if tags is not None else EMPTY_TAGS,
            quality,
        )

    def count_error(self, kind: str, device: str = "") -> None:
        """Count a non-fatal problem (``bad_checksum``, ``timeout``, ``exception_response``...).

        Shows up as ``gateway_driver_errors_total{driver,source,kind}``.
        """
        self.count_error_hook(self.driver, self.source, kind)

    async def reject(self, raw: bytes, kind: str, detail: str = "", *, device: str = "") -> None:
        """Refuse a whole message for good: count ``kind`` and keep the raw bytes with the reason.

        Returns once the message is stored in the buffer (``gateway buffer
        dead-letters`` lists it), so the driver may then acknowledge it to its
        source: a poison message must not come back forever. Raises only if the
        buffer cannot store it (disk full); the driver must not acknowledge then.
        """
        await self.keep_rejected([self.rejection(raw, kind, detail, device=device)])

    def rejection(self, raw: bytes, kind: str, detail: str = "", *, device: str = "") -> RejectedMessage:
        """Count a refused message and describe it, for ``keep_rejected`` (several in one buffer write)."""
        self.count_error(kind, device)
        raw = bytes(raw)
        return RejectedMessage(
            self.source, self.driver, device, raw, len(raw), f"{kind}: {detail}" if detail else kind, now_ns()
        )

    async def keep_rejected(self, items: Sequence[RejectedMessage]) -> None:
        """Store rejections in the buffer in one transaction; returns once they are durable."""
        if items:
            await self.reject_hook(items)

    def observe_poll(self, seconds: float) -> None:
        """Record how long one poll/transaction cycle took (``gateway_poll_duration_seconds``)."""
        self.observe_poll_hook(self.driver, self.source, seconds)

    def device_down(self, device: str, reason: str) -> None:
        """Mark a device as failing. Logged once on the transition, not on every poll."""
        if device not in self._down:
            self.logger.error("device %s is not answering: %s", device, reason)
            self.device_up_hook(self.driver, self.source, device, False)
        self._up.discard(device)
        self._down[device] = reason

    def device_up(self, device: str) -> None:
        """Mark a device as answering again. Logged once when it recovers.

        The hook (the ``gateway_device_up`` gauge) hears of the first poll and of each recovery, not of every
        poll: a label lookup per poll was ~1 % of the daemon's CPU at 100 devices polled every second.
        """
        if self._down.pop(device, None) is not None:
            self.logger.warning("device %s is answering again", device)
        if device not in self._up:
            self._up.add(device)
            self.device_up_hook(self.driver, self.source, device, True)

    def is_down(self, device: str) -> bool:
        return device in self._down


class Driver(abc.ABC):
    """Common base. Subclass ``PolledDriver`` or ``PushDriver``, not this."""

    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig, ctx: DriverContext) -> None:
        self.config = config
        self.ctx = ctx

    @classmethod  # noqa: B027 - optional hook
    def validate(cls, config: SourceConfig) -> None:
        """Checks beyond the pydantic model (cross-field, profile lookups). Pure.

        Raise ``ValueError`` with a message; the core reports it with the file and
        the source's key path.
        """

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue | None:
        """The devices (and their quantities) this source will emit, from its config. Pure.

        None: the driver cannot tell; such a source cannot be selected by name in a sink's
        routing rules (``gateway check`` says so) and its devices are selected by name instead.
        """
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open ports and connections. Raising here is retried with backoff."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything ``start`` acquired. Must not raise."""

    def status(self) -> dict[str, Any]:
        """Driver-specific status for ``gateway status`` (devices up/down...)."""
        return {}


class PolledDriver(Driver):
    """A driver the core polls every ``config.interval`` on aligned ticks."""

    @abc.abstractmethod
    async def poll(self) -> Sequence[Reading]:
        """Read once. Raise only when the whole source is unusable."""


class PushDriver(Driver):
    """A driver that produces readings on its own schedule (streams, subscriptions, buses)."""

    @abc.abstractmethod
    async def run(self, emit: Emit) -> None:
        """Run until cancelled. Returning or raising counts as a failure and restarts it."""
