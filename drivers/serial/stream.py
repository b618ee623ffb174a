"""One stream decoder per port: a framer plus a per-frame decoder, bytes in, measurements out.

Also knows which commands the device needs at start and, in query mode, on
every tick. Pure: no I/O, time is passed in, so tests drive it byte by byte.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import DecoderConfig, NMEADecoder, PMS5003Decoder, SDS011Decoder
from .framing import BinaryFramer, FeedResult, LineFramer
from .lines import LineError, make_parser, map_fields
from .measurement import Decoded, Measurement, Position
from .nmea import NMEAError, parse_fix, resync
from .particulates import (
    decode_pms5003,
    decode_sds011,
    pms5003_framer,
    pms5003_read,
    pms5003_set_passive,
    sds011_framer,
    sds011_query,
    sds011_set_query_mode,
    sds011_set_working_period,
)

FrameDecoder = Callable[[bytes], tuple[list[Measurement], list[str], Position | None]]


class StreamDecoder:
    def __init__(self, config: DecoderConfig, *, frame_timeout: float = 0.5) -> None:
        self.config = config
        self._framer: BinaryFramer | LineFramer
        self._decode: FrameDecoder
        if isinstance(config, SDS011Decoder):
            self._framer = sds011_framer(frame_timeout)
            self._decode = lambda frame: (decode_sds011(frame), [], None)
        elif isinstance(config, PMS5003Decoder):
            counts = config.particle_counts
            self._framer = pms5003_framer(frame_timeout)
            self._decode = lambda frame: (decode_pms5003(frame, particle_counts=counts), [], None)
        elif isinstance(config, NMEADecoder):
            self._framer = LineFramer(max_length=128, frame_timeout=frame_timeout)
            self._decode = _nmea_decoder(config)
        else:
            self._framer = LineFramer(max_length=config.max_line_length, frame_timeout=frame_timeout)
            self._decode = _line_decoder(config)

    def feed(self, data: bytes, now: float) -> Decoded:
        """Bytes just read (may be empty, to let a partial frame time out) -> decoded frames."""
        return self._decode_all(self._framer.feed(data, now))

    def _decode_all(self, framed: FeedResult) -> Decoded:
        out = Decoded(errors=framed.errors)
        for frame in framed.frames:
            measurements, errors, position = self._decode(frame)
            out.errors += errors
            if measurements:
                out.frames.append(measurements)
            if position is not None:
                out.position = position
        return out

    @property
    def polls(self) -> bool:
        """True when the device must be asked for each measurement (query/passive mode)."""
        return isinstance(self.config, SDS011Decoder | PMS5003Decoder) and self.config.mode == "query"

    def start_commands(self) -> list[bytes]:
        cfg = self.config
        out: list[bytes] = []
        if isinstance(cfg, SDS011Decoder):
            if cfg.mode is not None:
                out.append(sds011_set_query_mode(cfg.mode == "query"))
            if cfg.working_period is not None:
                out.append(sds011_set_working_period(cfg.working_period))
        elif isinstance(cfg, PMS5003Decoder) and cfg.mode is not None:
            out.append(pms5003_set_passive(cfg.mode == "query"))
        return out

    def query_command(self) -> bytes:
        return sds011_query() if isinstance(self.config, SDS011Decoder) else pms5003_read()


def _nmea_decoder(config: NMEADecoder) -> FrameDecoder:
    wanted = set(config.sentences)

    def decode(line: bytes) -> tuple[list[Measurement], list[str], Position | None]:
        line, noisy = resync(line)
        errors = ["garbage"] if noisy else []
        try:
            fix = parse_fix(line)
        except NMEAError as exc:
            return [], [*errors, exc.kind], None
        if fix is None:
            return [], errors, None  # a valid sentence we do not use (GSV, GSA, VTG...)
        position = fix.position if config.publish_position else None
        if fix.sentence not in wanted:
            return [], errors, position
        measurements = fix.measurements
        if fix.sentence == "RMC" and "GGA" in wanted:
            # GGA already reports the position each second; RMC adds speed and course.
            measurements = [m for m in measurements if m.quantity not in ("latitude", "longitude")]
        return measurements, errors, position

    return decode


def _line_decoder(config: DecoderConfig) -> FrameDecoder:
    assert not isinstance(config, SDS011Decoder | PMS5003Decoder | NMEADecoder)
    parse = make_parser(config)
    fields = config.fields

    def decode(line: bytes) -> tuple[list[Measurement], list[str], Position | None]:
        try:
            raw = parse(line.decode("utf-8"))
        except UnicodeDecodeError:
            return [], ["malformed_line"], None
        except LineError as exc:
            return [], [exc.kind], None
        measurements, errors = map_fields(raw, fields)
        return measurements, errors, None

    return decode
