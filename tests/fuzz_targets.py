"""Every decoder as a fuzz target: bytes in, readings or a typed refusal out, nothing else raised.

One home for the targets and the mutator, used by the Hypothesis tests
(tests/test_fuzz.py) and by the long runs (bench/fuzz.py). A target's ``run``
takes any bytes; the contract (docs/architecture.md, "Every decoder is
total") is that it returns, or raises one of its ``refusals``. Seeds are
valid inputs (protocol examples, simulator output); the mutator derives the
hostile ones from them (bit flips, truncation, insertion, splicing) the way a
noisy line or a broken network server would.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.buffer_codec import encode_value as encode_stored_value
from gateway.config import ConfigError, parse_config
from gateway.driver import DriverContext
from gateway.drivers.loramodem.modems import RAK3172Lines, RN2483Lines
from gateway.drivers.lorawan.codecs import Codec, make_codec
from gateway.drivers.lorawan.config import LoRaWANConfig
from gateway.drivers.lorawan.driver import LoRaWANDriver
from gateway.drivers.lorawan.events import EventError
from gateway.drivers.modbus.config import FieldSpec as ModbusField
from gateway.drivers.modbus.decode import DATA_TYPES, WORD_ORDERS, DecodeError, RegisterValue, encode_value
from gateway.drivers.modbus.decode_plan import BlockDecoder
from gateway.drivers.modbus.planner import Span, plan_requests
from gateway.drivers.modbus.poller import field_value
from gateway.drivers.serial.config import DecoderConfig, SerialSourceConfig, resolve
from gateway.drivers.serial.nmea import NMEAError, parse_fix
from gateway.drivers.serial.stream import StreamDecoder
from gateway.frame import as_readings
from gateway.model import Reading
from gateway.normalise import Normaliser
from gateway.profiles import load_profile
from gateway.simulators.lorawan import payloads
from gateway.simulators.lorawan.ns import (
    Server,
    chirpstack_uplink,
    join_message,
    make_devices,
    ttn_uplink,
    uplink_topic,
)
from gateway.simulators.serial.devices import gps_frames, make_frame, nmea_sentence, pms5003_frame, sds011_frame

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    seeds: tuple[bytes, ...]
    refusals: tuple[type[BaseException], ...] = ()
    tokens: tuple[bytes, ...] = ()  # fragments worth inserting (a fuzzer's dictionary)
    structured: Callable[[random.Random, bytes], bytes] | None = None  # a format-aware mutation of a seed


# --- the mutator ---------------------------------------------------------------

# What broke decoders before (issue 8) and what usually does: stray line ends,
# NUL, huge numbers, deep nesting, non-ASCII digits, sync bytes.
COMMON_TOKENS: tuple[bytes, ...] = (
    b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc2\xb2", b"\xd9\xa3", b"-", b"0", b"9" * 400, b"7" * 4301,
    b"[" * 2000, b"{", b"}", b'"', b",", b":", b";", b"=", b"$", b"*", b".", b" ", b"1e999", b"-1e999", b"NaN",
    b"\xaa", b"\x42\x4d", b"\xab", b"\x7f\xff", b"\x80\x00",
)  # fmt: skip
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x22, 0x24, 0x2A, 0x2C, 0x30, 0x39, 0xAA)


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def mutate(rng: random.Random, target: Target) -> bytes:
    """A random input: plain random bytes now and then, else 1-4 mutations of a seed."""
    seeds, tokens = target.seeds, target.tokens
    if rng.random() < 0.1:
        return random_bytes(rng, rng.randrange(0, 256))
    if target.structured is not None and rng.random() < 0.4:
        return target.structured(rng, rng.choice(seeds))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(data))
        if op == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation, from either end
            data = data[:pos] if rng.random() < 0.7 else data[pos:]
        elif op == 2:  # insertion of random bytes
            data[pos:pos] = random_bytes(rng, rng.randint(1, 8))
        elif op == 3:  # insertion of a token
            data[pos:pos] = rng.choice((*tokens, *COMMON_TOKENS))
        elif op == 4:  # splice with another seed
            other = rng.choice(seeds)
            data = data[:pos] + other[rng.randint(0, len(other)) :]
        elif op == 5 and data:  # an interesting byte value
            data[rng.randrange(len(data))] = rng.choice(_INTERESTING_BYTES)
        elif op == 6 and data:  # duplicate a chunk
            i = rng.randrange(len(data))
            data[pos:pos] = data[i : i + rng.randint(1, 32)]
        elif op == 7 and data:  # delete a chunk
            del data[pos : pos + rng.randint(1, 16)]
    return bytes(data)


# Values a broken network server or codec could put in any JSON field.
JSON_VALUES: tuple[object, ...] = (
    None, True, 0, -1, 2**64, 10**400, 1e308, -1e308, 0.5, "", "\u00b2", "\u0663", "9" * 5000, "-1", "NaN",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "AAAA", "%%%", [], {}, [[[]]], {"a": {"b": 1}},
)  # fmt: skip


def mutate_json_leaf(rng: random.Random, seed: bytes) -> bytes:
    """Replace one value inside a JSON document with a hostile one (keeps the rest valid)."""
    stripped = seed.rstrip()
    tail = seed[len(stripped) :]  # a serial line keeps its line end
    head, sep, body = stripped.rpartition(b"\n")  # "<topic>\n<json>" seeds keep their topic
    doc = json.loads(body)
    node: Any = doc
    path: list[tuple[Any, Any]] = []
    while isinstance(node, dict | list) and node and (not path or rng.random() < 0.7):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        parent[key] = rng.choice(JSON_VALUES)
    return head + sep + json.dumps(doc).encode() + tail


class Unstorable(Exception):
    """A decoder made a reading the buffer cannot commit: it would fail every commit it is part of."""


def storable(readings: Sequence[Reading]) -> Sequence[Reading]:
    """Check what the buffer needs beyond the Reading type: a 64-bit timestamp and an encodable value."""
    for r in readings:
        if not -(2**63) <= r.ts_ns < 2**63:
            raise Unstorable(f"ts_ns {r.ts_ns} does not fit the buffer's 64-bit column")
        encode_stored_value(r.value)  # raises on a type the buffer cannot keep
    return readings


# --- Modbus ----------------------------------------------------------------------

_SCALES = ((1.0, 0.0), (0.001, 0.0), (0.1, -40.0), (1e300, 0.0), (-1e-300, 1e308))


@cache
def _modbus_field(type_i: int, order_i: int, extra: int, scale_i: int) -> ModbusField | None:
    data_type, order = DATA_TYPES[type_i % len(DATA_TYPES)], WORD_ORDERS[order_i % len(WORD_ORDERS)]
    scale, offset = _SCALES[scale_i % len(_SCALES)]
    spec: dict[str, object] = {"quantity": "active_power", "unit": "kW", "address": 0, "type": data_type}
    spec |= {"order": order, "scale": scale, "offset": offset, "length": 1 + extra % 4}
    if extra % 3 == 1:
        spec["bit"] = extra % 64
    elif extra % 3 == 2:
        spec["mask"] = 1 + extra * 0x0101 % 0xFFFF
    try:
        return ModbusField.model_validate(spec)
    except ValidationError:  # a combination the config refuses (bit on a float...): never reaches the decoder
        return None


def _modbus(data: bytes) -> object:
    """Bytes 0-3 choose the field (type, word order, bit/mask/length, scale); the rest are the registers."""
    head = data[:4].ljust(4, b"\x00")
    spec = _modbus_field(head[0], head[1], head[2], head[3])
    if spec is None:
        return None
    body = data[4:]
    words = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body) - 1, 2)]
    return field_value(spec, words)


def _modbus_block(data: bytes) -> object:
    """Two or three fields side by side (bytes 0-11 choose them, as above), read as one request and decoded in bulk:
    the values must be exactly what the per-field decoder makes of the same words."""
    head = data[:12].ljust(12, b"\x00")
    specs = [_modbus_field(*head[k : k + 4]) for k in range(0, 12, 4)][: 2 + head[11] % 2]
    fields: list[ModbusField] = []
    for spec in specs:
        if spec is not None:
            fields.append(spec.model_copy(update={"address": sum(f.span for f in fields)}))
    if not fields:
        return None
    spans = [Span(f.table, f.address, f.span) for f in fields]
    (request,) = plan_requests(spans)
    body = data[12:]
    words = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body) - 1, 2)][: request.count]
    decoded = BlockDecoder(request, fields, spans).decode(words)
    if decoded is None:  # does not fit: the poller decodes field by field, which must refuse it
        for f in fields:
            field_value(f, words[f.address : f.address + f.span])
        raise DecodeError(f"{len(words)} words for {request.count} registers")
    values, statuses = decoded
    for k, f in enumerate(fields):
        value, _unit, _quality, status = field_value(f, words[f.address : f.address + f.span])
        same = value == values[k] or (value != value and values[k] != values[k])  # NaN is NaN
        if not same or type(value) is not type(values[k]) or status != ("ok" if statuses is None else statuses[k]):
            raise AssertionError(f"bulk {values[k]!r} ({statuses}) != per field {value!r} ({status}) for {f}")
    return values


def _modbus_seeds() -> tuple[bytes, ...]:
    out = []
    for t, data_type in enumerate(DATA_TYPES):
        value: RegisterValue = "SDM630" if data_type == "string" else (True if data_type == "bool" else 230)
        for o, order in enumerate(WORD_ORDERS):
            words = encode_value(value, data_type, order, length=3)
            out.append(bytes([t, o, 0, 0]) + b"".join(w.to_bytes(2, "big") for w in words))
    return tuple(out)


# --- serial ----------------------------------------------------------------------


def _serial_decoder(profile: str | None, **decoder: object) -> DecoderConfig:
    cfg = SerialSourceConfig.model_validate(
        {"driver": "serial", "name": "fuzz", "port": "/dev/null", "profile": profile, "decoder": decoder}
    )
    return resolve(cfg)[0]


def _stream(config: DecoderConfig) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        # A fresh decoder per input, fed in two reads split where the first byte says,
        # then left quiet so that a partial frame times out.
        decoder = StreamDecoder(config)
        cut = data[0] % (len(data) + 1) if data else 0
        return [decoder.feed(data[:cut], 0.0), decoder.feed(data[cut:], 0.1), decoder.feed(b"", 10.0)]

    return run


def _serial_targets() -> list[Target]:
    sds = tuple(sds011_frame(a / 10, b / 10) for a, b in ((0, 0), (125, 340), (9999, 65535)))
    pms = tuple(pms5003_frame(a, a * 2, a * 3, (900, 300, 60, 8, 2, a)) for a in (0, 12, 65535 // 3))
    gga, rmc, _ = gps_frames(3)
    nmea = (gga, rmc, gga + rmc, nmea_sentence("GPGSV,3,1,11,03,03,111,00*74"), b"noise" + gga)
    lines = {device: tuple(make_frame(device, n).data for n in range(3)) for device in ("kv", "csv", "json")}
    return [
        Target("serial.sds011", _stream(_serial_decoder("sds011")), (*sds, b"".join(sds))),
        Target("serial.pms5003", _stream(_serial_decoder("pms5003")), (*pms, b"".join(pms))),
        Target("serial.nmea", _stream(_serial_decoder("nmea-gps")), nmea, tokens=(b"$GPGGA,", b"*00")),
        Target("nmea.parse_fix", parse_fix, nmea, (NMEAError,), tokens=(b"$GPRMC,", b",N,", b",W,", b"*")),
        Target("serial.csv", _stream(_serial_decoder("maker-climate-csv")), lines["csv"]),
        Target(
            "serial.json",
            _stream(_serial_decoder("maker-climate-json", max_line_length=65536)),
            lines["json"],
            tokens=(b'{"env": ', b'"t": ', b"true", b"null", b"[]"),
            structured=mutate_json_leaf,
        ),
        Target("serial.keyvalue", _stream(_serial_decoder("maker-climate-kv")), lines["kv"]),
        Target(
            "serial.regex",
            _stream(
                _serial_decoder(
                    None,
                    type="regex",
                    pattern=r"T=(?P<t>-?[\d.]+) H=(?P<h>[\d.]+) P=(?P<p>[\d.]+)",
                    fields=[
                        {"key": "t", "quantity": "temperature"},
                        {"key": "h", "quantity": "relative_humidity"},
                        {"key": "p", "quantity": "pressure"},
                    ],
                )
            ),
            lines["kv"],
        ),
    ]


# --- LoRa ------------------------------------------------------------------------


def _codec(name: str, profile: str | None = None) -> Codec:
    if profile is None:
        return make_codec(name)
    _path, raw = load_profile(profile)
    return make_codec(raw["codec"], raw.get("codec_options"))


def _codec_target(name: str, codec: Codec, seeds: tuple[bytes, ...]) -> Target:
    def run(data: bytes) -> object:
        # First byte: the fPort (0 = not reported); the rest: the payload.
        return codec.decode(data[1:], data[0] if data else 0)

    return Target(f"lora.{name}", run, tuple(bytes([2]) + s for s in seeds))


def _lorawan_target(server: Server) -> Target:
    devices = make_devices(2, "dragino_lht65")
    ids = [d.dev_eui if server == "chirpstack" else d.device_id for d in devices]
    config = LoRaWANConfig.model_validate(
        {
            "driver": "lorawan",
            "name": "fuzz",
            "server": server,
            "use_server_decoded": True,  # the server's object is fuzzed too
            "default_codec": "cayenne_lpp",  # for the devices not listed
            "devices": [{"id": ids[0], "profile": "lorawan-dragino-lht65"}],
        }
    )
    logger = logging.getLogger("fuzz.lorawan")
    logger.propagate = False  # the first problem of each kind is logged: not wanted 1,000,000 times
    logger.addHandler(logging.NullHandler())
    ctx = DriverContext(site="s", gateway="g", source="fuzz", driver="lorawan", logger=logger)
    driver = LoRaWANDriver(config, ctx)
    normaliser = Normaliser(driver="lorawan", source="fuzz", source_tags={}, metrics=None)

    def run(data: bytes) -> object:
        # "<topic>\n<payload>": the topic decides the event type, and is fuzzed too.
        topic, _, payload = data.partition(b"\n")
        readings = driver.process(topic.decode("utf-8", "replace"), payload, [])
        return storable(as_readings(normaliser.normalise(readings)))

    app = config.application
    now = time.time_ns()
    seeds = []
    for dev in devices:
        up = chirpstack_uplink(dev, ts_ns=now) if server == "chirpstack" else ttn_uplink(dev, ts_ns=now)
        decoded = {"TempC_SHT": 21.5, "Hum_SHT": 55, "BatV": 3.1}
        if server == "chirpstack":
            with_object = {**up, "object": decoded}
        else:
            with_object = {**up, "uplink_message": {**up["uplink_message"], "decoded_payload": decoded}}
        join = join_message(server, dev, ts_ns=now, application=app)
        status = {"time": up.get("time", ""), "batteryLevel": 88.5, "margin": 7, "deviceInfo": {"devEui": dev.dev_eui}}
        for event, doc in (("up", up), ("up", with_object), ("join", join), ("status", status)):
            topic = uplink_topic(server, app, dev, event)
            seeds.append(topic.encode() + b"\n" + json.dumps(doc).encode())
    tokens = (b'"fCnt": "\xc2\xb2", ', b'"f_cnt": "' + b"9" * 4301 + b'", ', b'"9999-12-31T23:59:59Z"', b"1e999")
    return Target(f"lorawan.{server}", run, tuple(seeds), (EventError,), tokens, mutate_json_leaf)


def _lines(parser: Callable[[], RAK3172Lines | RN2483Lines]) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        lines = parser()
        return [lines.parse(line.strip(), 0) for line in data.decode("ascii", "replace").split("\n")]

    return run


def _lora_targets() -> list[Target]:
    hex_ = payloads.cayenne(1).hex().upper()
    return [
        _codec_target("cayenne", _codec("cayenne_lpp"), tuple(payloads.cayenne(n) for n in range(3))),
        _codec_target("dragino", _codec("dragino_lht65"), tuple(payloads.dragino_lht65(n) for n in range(3))),
        _codec_target("elsys", _codec("elsys"), tuple(payloads.elsys(n) for n in range(3))),
        _codec_target(
            "decentlab",
            _codec("decentlab", "lorawan-decentlab-dl-sht35"),
            tuple(payloads.decentlab_sht35(n) for n in range(3)),
        ),
        _lorawan_target("chirpstack"),
        _lorawan_target("ttn"),
        Target(
            "loramodem.rak3172",
            _lines(RAK3172Lines),
            (
                f"+EVT:RXP2P:-60:11:{hex_}".encode(),
                f"+EVT:RXP2P, RSSI -60, SNR 11\n+EVT:{hex_}".encode(),
                b"OK\n+EVT:RXP2P:-120:-5:",
            ),
            tokens=(b"+EVT:", b"RXP2P", b":-", b"RSSI"),
        ),
        Target(
            "loramodem.rn2483",
            _lines(RN2483Lines),
            (f"radio_rx  {hex_}".encode(), b"radio_err", b"radio_rx  \nok"),
            tokens=(b"radio_rx", b"  "),
        ),
    ]


# --- config ----------------------------------------------------------------------


def _config(data: bytes) -> object:
    # load_config refuses a file that is not UTF-8 (tests/test_config_refusals.py); the
    # rest of the pipeline gets valid text. The environment is empty, so ${VAR}
    # references are fuzzed too without reading this process's.
    return parse_config(data.decode("utf-8", "replace"), source="fuzz.toml", env={})


def _config_target() -> Target:
    seeds = [p.read_bytes() for p in sorted((ROOT / "drivers").glob("*/sample.toml"))]
    seeds.append((ROOT / "config" / "gateway.example.toml").read_bytes())
    tokens = (b"[[sources]]\n", b"[[sinks]]\n", b'= "${X}"', b"= 1e999", b"= 99999999999999999999", b'"\\u0000"')
    return Target("config.toml", _config, tuple(seeds), (ConfigError,), tokens)


@cache
def targets() -> dict[str, Target]:
    """Every fuzz target by name (built once: profiles and plugins are loaded here)."""
    all_ = [Target("modbus.decode", _modbus, _modbus_seeds(), (DecodeError,))]
    block_seeds = tuple(bytes([s[0], s[1], 0, 0] * 3) + s[4:] * 3 for s in _modbus_seeds())
    all_.append(Target("modbus.block", _modbus_block, block_seeds, (DecodeError,)))
    all_ += _serial_targets() + _lora_targets() + [_config_target()]
    return {t.name: t for t in all_}


def check(target: Target, data: bytes) -> BaseException | None:
    """Run one input; the unexpected exception it raised, or None."""
    try:
        target.run(data)
    except target.refusals:
        return None
    except Exception as exc:
        return exc
    return None
