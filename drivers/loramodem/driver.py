"""``loramodem`` driver: packets received by a serial LoRa P2P modem, decoded with the LoRaWAN codecs.

P2P packets carry no network-server time, so readings are stamped with the
gateway clock when the packet line arrives. Each packet is committed (``await
emit``) before the next line is read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import serial
import serial_asyncio_fast
from pydantic import ValidationError

from gateway import plugins
from gateway.driver import DeviceCatalogue, DriverContext, Emit, PushDriver, SourceConfig
from gateway.drivers.loramodem.config import LoRaModemConfig
from gateway.drivers.loramodem.modems import MODEMS, BadLine, ModemError, Packet
from gateway.drivers.lorawan.codecs import Codec, CodecConfigError, DecodeResult, make_codec
from gateway.drivers.lorawan.config import DeviceProfile, profile_problem
from gateway.model import Reading
from gateway.profiles import ProfileError, load_profile
from gateway.scheduling import Backoff

# Lines that announced a packet but could not be read; other bad lines (a
# radio_err, an echo) are only counted.
_KEPT_FOR_INSPECTION = frozenset({"bad_hex", "bad_event"})


def build_codec(config: LoRaModemConfig) -> Codec | None:
    """The configured codec (directly or through a profile); ValueError names the key."""
    name, options, where = config.codec, config.codec_options, "codec"
    if config.profile:
        try:
            path, raw = load_profile(config.profile)
            profile = DeviceProfile.model_validate(raw)
        except ProfileError as exc:
            raise ValueError(f"profile: {exc}") from exc
        except ValidationError as exc:
            raise ValueError(f"profile: {profile_problem(path, exc)}") from exc
        name, options, where = profile.codec, profile.codec_options, "profile"
    if not name:
        return None
    try:
        return make_codec(name, options)
    except (plugins.PluginError, CodecConfigError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


class LoRaModemDriver(PushDriver):
    config_model: ClassVar[type[SourceConfig]] = LoRaModemConfig
    config: LoRaModemConfig

    def __init__(self, config: SourceConfig, ctx: DriverContext) -> None:
        assert isinstance(config, LoRaModemConfig)
        super().__init__(config, ctx)
        self._codec = build_codec(config)
        self._device = config.device or config.name
        self.counters = {"packets": 0, "readings": 0, "rejected": 0}

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        assert isinstance(config, LoRaModemConfig)
        build_codec(config)

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue:
        assert isinstance(config, LoRaModemConfig)
        device = config.device or config.name
        if config.address_bytes:  # one device per node address, named when its first packet arrives
            return DeviceCatalogue({}, patterns=(f"{device}-*",))
        return DeviceCatalogue({device: None})

    def status(self) -> dict[str, Any]:
        return {"port": self.config.port, "modem": self.config.modem, **self.counters}

    async def run(self, emit: Emit) -> None:
        backoff = Backoff(initial_s=0.5, cap_s=30.0)
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=self.config.port, baudrate=self.config.baud
                )
                modem = MODEMS[self.config.modem](self.config, reader, writer)
                await modem.setup()
                self.ctx.device_up(self.config.port)
                backoff.reset()
                async for item in modem.packets():
                    if isinstance(item, BadLine):
                        await self._bad_line(item)
                        continue
                    readings = self.readings(item)
                    if readings:
                        await emit(readings)
                        self.counters["readings"] += len(readings)
            except (ModemError, OSError, serial.SerialException) as exc:
                kind = exc.kind if isinstance(exc, ModemError) else "port_error"
                self.ctx.count_error(kind)
                self.ctx.device_down(self.config.port, f"{self.config.modem}: {exc}")
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            await asyncio.sleep(backoff.next_delay())

    def readings(self, packet: Packet) -> list[Reading]:
        """Readings of one received packet (decoded values, then RSSI/SNR)."""
        self.counters["packets"] += 1
        payload, device = packet.payload, self._device
        n = self.config.address_bytes
        if n:
            if len(payload) < n:
                self._problem("truncated_payload", payload.hex())
                return []
            device, payload = f"{self._device}-{payload[:n].hex()}", payload[n:]
        result = self._decode(payload)
        for kind in result.problems:
            self._problem(kind, f"{device}: {packet.payload.hex()}")
        ts, tags = packet.ts_ns, dict(self.config.tags)
        out = [
            self.ctx.reading(
                device,
                m.quantity,
                m.value,
                m.unit,
                ts_ns=ts,
                tags=tags if m.channel is None else {**tags, "channel": m.channel},
            )
            for m in result.values
        ]
        if self.config.radio_readings:
            if packet.rssi is not None:
                out.append(self.ctx.reading(device, "rssi", packet.rssi, "dBm", ts_ns=ts, tags=tags))
            if packet.snr is not None:
                out.append(self.ctx.reading(device, "snr", packet.snr, "dB", ts_ns=ts, tags=tags))
        return out

    def _decode(self, payload: bytes) -> DecodeResult:
        if self._codec is None:
            return DecodeResult(problems=["no_codec"])
        try:
            return self._codec.decode(payload, self.config.f_port)
        except Exception:  # a third-party codec bug loses this packet, not the driver
            self.ctx.logger.exception("codec failed on %s", payload.hex())
            return DecodeResult(problems=["codec_failed"])

    async def _bad_line(self, item: BadLine) -> None:
        if item.kind in _KEPT_FOR_INSPECTION:
            # A packet event we could not read: keep it (`gateway buffer dead-letters`).
            self.counters["rejected"] += 1
            self.ctx.logger.debug("%s: %s", item.kind, item.line[:200])
            await self.ctx.reject(item.line.encode("utf-8", "replace"), item.kind)
        else:
            self._problem(item.kind, item.line[:200])

    def _problem(self, kind: str, detail: str) -> None:
        self.ctx.count_error(kind)
        self.ctx.logger.debug("%s: %s", kind, detail)
