"""The sink contract.

A sink writes one batch and says what happened; the core (``gateway.dispatch``)
owns retries, splitting, dead-lettering and the durable buffer. A sink never
buffers on its own and never retries on its own.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.downsample import DownsampleConfig
from gateway.frame import Frame, as_readings
from gateway.model import Reading
from gateway.routing import RouteConfig, Rule, Shape


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # every reading is stored; ack them
    RETRY = "retry"  # transient (network, 5xx, 429): keep all, back off, send again
    AUTH = "auth"  # 401/403: keep all, retry slowly, log loudly
    TOO_LARGE = "too_large"  # 413: the core splits the batch in two and sends each half
    REJECTED = "rejected"  # 400/422: something in the batch is bad; the core bisects
    # down to single readings and dead-letters the ones still rejected


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    detail: str = ""
    retry_after_s: float | None = None  # server hint (Retry-After), honoured by the core

    @classmethod
    def ok(cls) -> SendResult:
        return cls(Outcome.ACCEPTED)


class SinkHealth:
    """What a sink remembers of its last outcomes, for ``status()``.

    Logging the transitions (once into failure, once on recovery) is the
    dispatcher's job (``gateway.dispatch``); sinks log here only at debug level
    so the log does not say everything twice.
    """

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.logger = logger
        self.failing: Outcome | None = None
        self.last_error = ""

    def record(self, result: SendResult) -> SendResult:
        if result.outcome is Outcome.ACCEPTED:
            if self.failing is not None:
                self.logger.debug("sink %s: recovered", self.name)
            self.failing = None
        elif result.outcome in (Outcome.RETRY, Outcome.AUTH):
            self.last_error = result.detail
            if self.failing is not result.outcome:
                self.logger.debug("sink %s: %s (%s)", self.name, result.outcome.value, result.detail)
            self.failing = result.outcome
        else:
            # REJECTED / TOO_LARGE concern the batch, not the server.
            self.last_error = result.detail
        return result

    def status(self) -> dict[str, Any]:
        return {"failing": self.failing.value if self.failing else None, "last_error": self.last_error}


class SinkConfig(BaseModel):
    """Fields every sink has; each sink subclasses this with its own."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(default="", description="unique sink name; defaults to the type")
    # 5,000 values: a batch is sent and acknowledged whole within the sink's timeout, and after an outage the
    # backlog drains in full batches over what is often a slow 4G link (~40 KB of gzipped line protocol).
    # On a LAN at 100k values/s 5,000 fell 1 % behind (each batch a take, a send and an ack in turn) and
    # 20,000 kept up at 0.34 s p50 (bench_load 100x1000): docs/sinks.md says when to raise it.
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    enabled: bool = True
    # Routing (gateway/routing.py, docs/routing.md): which readings this sink receives and in what form.
    include: list[Rule] = Field(default_factory=list, description="send only readings matching one of these")
    exclude: list[Rule] = Field(default_factory=list, description="never send readings matching one of these")
    shape: Shape = Field(default_factory=Shape, description="drop/rename tags, drop quantities, coarsen positions")
    downsample: DownsampleConfig | None = Field(
        default=None, description="send statistics per aligned window to this sink only (gateway/downsample.py)"
    )

    @property
    def sink_name(self) -> str:
        return self.name or self.type

    @property
    def route(self) -> RouteConfig:
        return RouteConfig(include=self.include, exclude=self.exclude, shape=self.shape)


class Sink(abc.ABC):
    """Base class of every sink. Subclasses set ``config_model``."""

    config_model: ClassVar[type[SinkConfig]]

    def __init__(self, config: SinkConfig, *, site: str, gateway: str, state_dir: Path | None = None) -> None:
        self.config = config
        self.site = site
        self.gateway = gateway
        self.state_dir = state_dir

    @property
    def name(self) -> str:
        return self.config.sink_name

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect. Must not raise for a dead server: ``send`` reports RETRY instead."""

    @abc.abstractmethod
    async def send(self, batch: Sequence[Reading]) -> SendResult:
        """Write a batch (in buffer order). Must not raise for remote errors."""

    async def send_frames(self, frames: Sequence[Frame]) -> SendResult:
        """Write a batch of frames (in buffer order); same contract as ``send``.

        The default sends their values one by one through ``send``; a sink that
        can encode a frame at once (a SenML pack, one line-protocol line) overrides it.
        """
        return await self.send(as_readings(frames))

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""

    def status(self) -> dict[str, Any]:
        """Extra, sink-specific status for ``gateway status``."""
        return {}
