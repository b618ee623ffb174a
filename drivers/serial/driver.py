"""The serial driver: one port, one stream decoder, reopened with backoff after an unplug.

I/O goes through pyserial-asyncio-fast on top of pyserial: the port's file
descriptor is watched by the event loop (add_reader), so reads never block the
loop and no thread per port is needed; opening and closing, which can block on
a USB adapter, run in the default executor inside that library. It works on
pty pairs, which is what the simulator and the tests use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, cast

import serial
import serial_asyncio_fast

from gateway.driver import DeviceCatalogue, DriverContext, Emit, PushDriver, SourceConfig
from gateway.model import Quality, Reading, now_ns
from gateway.scheduling import FIRST_POLL_AT_ONCE, Backoff, aligned_ticks

from .config import SDS011Decoder, SerialSourceConfig, resolve
from .measurement import Measurement, Position
from .position import POSITIONS, PositionRegistry, position_tags
from .stream import StreamDecoder

_PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
_IDLE_TICK_S = 0.25  # how often a quiet port is checked for partial-frame and silence timeouts
_COMMAND_GAP_S = 0.1  # sensors drop a command sent right on the heels of another


class PortLost(Exception):
    """The port vanished (unplug, EOF, read error); the driver reopens it with backoff."""


_POSITION_UNITS = {"latitude": "lat", "longitude": "lon"}  # SenML units of the canonical quantities


class SerialDriver(PushDriver):
    """Reads one serial port and turns each valid frame into readings."""

    config_model = SerialSourceConfig

    def __init__(self, config: SourceConfig, ctx: DriverContext, *, positions: PositionRegistry = POSITIONS) -> None:
        super().__init__(config, ctx)
        self.cfg = cast(SerialSourceConfig, config)
        self.decoder_config, self.baudrate = resolve(self.cfg)
        self.positions = positions
        self.device = self.cfg.device_name
        self._open = False
        self._frames = 0
        self._reopens = 0
        self._last_position: Position | None = None

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        cfg = cast(SerialSourceConfig, config)
        resolve(cfg)
        if cfg.position_from == cfg.name:
            raise ValueError("position_from: a source cannot take its position from itself")

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue:
        # One device per serial line; its quantities depend on the frames that arrive.
        return DeviceCatalogue({cast(SerialSourceConfig, config).device_name: None})

    @property
    def silence_timeout(self) -> float:
        """Quiet time before the device counts as down; a sleeping SDS011 is quiet for its period."""
        timeout = self.cfg.silence_timeout
        dec = self.decoder_config
        if isinstance(dec, SDS011Decoder) and dec.working_period:
            timeout = max(timeout, 2 * 60 * dec.working_period)
        if StreamDecoder(dec).polls:
            timeout = max(timeout, 3 * self.cfg.interval)
        return timeout

    def status(self) -> dict[str, Any]:
        return {
            "port": self.cfg.port,
            "open": self._open,
            "decoder": self.decoder_config.type,
            "frames": self._frames,
            "reopens": self._reopens,
        }

    async def run(self, emit: Emit) -> None:
        backoff = Backoff(initial_s=0.5, cap_s=self.cfg.reconnect_max)
        while True:
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=self.cfg.port,
                    baudrate=self.baudrate,
                    bytesize=self.cfg.bytesize,
                    parity=_PARITY[self.cfg.parity],
                    stopbits=self.cfg.stopbits,
                    exclusive=True,  # a second reader on one port would steal half the bytes
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                self.ctx.count_error("open_failed", self.device)
                self.ctx.device_down(self.device, f"cannot open {self.cfg.port}: {exc}")
                await asyncio.sleep(backoff.next_delay())
                continue
            self._open = True
            reason = ""
            try:
                await self._session(reader, writer, emit, backoff)
            except* PortLost as group:
                reason = str(group.exceptions[0])
            finally:
                self._open = False
                writer.close()
            self._reopens += 1
            self.ctx.count_error("port_lost", self.device)
            self.ctx.device_down(self.device, f"{self.cfg.port}: {reason}")
            await asyncio.sleep(backoff.next_delay())

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, emit: Emit, backoff: Backoff
    ) -> None:
        decoder = StreamDecoder(self.decoder_config, frame_timeout=self.cfg.frame_timeout)
        for command in decoder.start_commands():
            writer.write(command)
            await asyncio.sleep(_COMMAND_GAP_S)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read_loop(reader, decoder, emit, backoff), name=f"serial-read-{self.cfg.name}")
            if decoder.polls:
                tasks.create_task(self._query_loop(writer, decoder), name=f"serial-query-{self.cfg.name}")

    async def _query_loop(self, writer: asyncio.StreamWriter, decoder: StreamDecoder) -> None:
        async for _tick, _missed in aligned_ticks(self.cfg.interval, first_at_once=FIRST_POLL_AT_ONCE):
            writer.write(decoder.query_command())

    async def _read_loop(
        self, reader: asyncio.StreamReader, decoder: StreamDecoder, emit: Emit, backoff: Backoff
    ) -> None:
        silence = self.silence_timeout
        last_frame = time.monotonic()
        publish = getattr(self.decoder_config, "publish_position", False)
        while True:
            data = b""
            try:
                async with asyncio.timeout(_IDLE_TICK_S):
                    data = await reader.read(4096)
                if not data:
                    raise PortLost("port closed (end of file)")
            except TimeoutError:
                pass
            except (serial.SerialException, OSError) as exc:
                raise PortLost(f"read failed: {exc}") from exc
            now = time.monotonic()
            decoded = decoder.feed(data, now)
            for kind in decoded.errors:
                self.ctx.count_error(kind, self.device)
            if decoded.position is not None and publish:
                self.positions.publish(self.cfg.name, decoded.position, now=now)
            if decoded.frames:
                last_frame = now
                backoff.reset()
                self.ctx.device_up(self.device)
                self._frames += len(decoded.frames)
                await emit(self._readings(decoded.frames))
            elif now - last_frame > silence:
                self.ctx.device_down(self.device, f"no valid frame for {silence:g} s")

    def _readings(self, frames: Sequence[Sequence[Measurement]]) -> list[Reading]:
        tags = dict(self.cfg.tags)
        position = None
        if self.cfg.position_from is not None:
            position = self.positions.latest(self.cfg.position_from, max_age_s=self.cfg.position_max_age)
            if position is not None and self.cfg.position_tag_decimals is not None:
                tags.update(position_tags(position, self.cfg.position_tag_decimals))
        out = []
        for frame in frames:
            ts = now_ns()  # one stamp per frame: frames read in one chunk must not collide
            if position is not None and position != self._last_position:
                # Position is data, not a tag: a precise lat/lon tag made a new series at every move
                # (docs/data-model.md, "Position"). Sent when it changes, stamped like the frame.
                self._last_position = position
                for quantity, value in (("latitude", position.latitude), ("longitude", position.longitude)):
                    out.append(self.ctx.reading(self.device, quantity, value, _POSITION_UNITS[quantity], ts_ns=ts,
                                                tags=tags))  # fmt: skip
            for m in frame:
                if m.quality is Quality.BAD:
                    self.ctx.count_error("out_of_range", self.device)
                reading = self.ctx.reading(
                    self.device, m.quantity, m.value, m.unit, ts_ns=ts, tags=tags, quality=m.quality
                )
                out.append(reading)
        return out
