"""Incremental framing: split frames, garbage, resync, partial-frame timeout; Hypothesis properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.drivers.serial.config import DecoderConfig, KeyValueDecoder, NMEADecoder, PMS5003Decoder, SDS011Decoder
from gateway.drivers.serial.framing import LineFramer
from gateway.drivers.serial.particulates import pms5003_framer, sds011_framer
from gateway.drivers.serial.stream import StreamDecoder
from gateway.simulators.serial.devices import nmea_sentence, pms5003_frame, sds011_frame

SDS_REAL = bytes.fromhex("AA C0 8C 00 94 00 BC F9 D5 AB")  # docs/protocols.md#5a-nova-fitness-sds011
PMS_REAL = bytes.fromhex(  # docs/protocols.md#5b-plantower-pms5003
    "42 4D 00 1C 00 00 00 08 00 08 00 00 00 08 00 08 00 D2 00 46 00 2D 00 1E 00 00 00 00 97 00 02 C5"
)


def test_frame_split_byte_by_byte() -> None:
    framer = sds011_framer()
    frames = []
    for i, b in enumerate(SDS_REAL * 3):
        out = framer.feed(bytes([b]), i * 0.001)
        assert out.errors == []
        frames += out.frames
    assert frames == [SDS_REAL] * 3


def test_garbage_then_frame_counts_garbage_once() -> None:
    out = pms5003_framer().feed(b"\x00\x01\x02\x42\x00" + PMS_REAL, 0.0)
    assert out.frames == [PMS_REAL]
    assert out.errors == ["garbage"]


def test_resync_finds_frame_inside_a_false_start() -> None:
    # A sync byte followed by a real frame: the false candidate fails, the real one is found.
    out = sds011_framer().feed(b"\xaa\xc0\x01" + SDS_REAL, 0.0)
    assert out.frames == [SDS_REAL]
    assert "bad_frame" in out.errors or "bad_checksum" in out.errors


def test_partial_frame_times_out() -> None:
    framer = sds011_framer(frame_timeout=0.5)
    assert framer.feed(SDS_REAL[:6], 0.0).frames == []
    assert framer.expire(0.4).errors == []
    assert framer.expire(0.6).errors == ["truncated_frame"]
    out = framer.feed(SDS_REAL, 1.0)
    assert out.frames == [SDS_REAL] and out.errors == []


def test_truncated_line_is_not_glued_to_the_next_line() -> None:
    dec = StreamDecoder(
        KeyValueDecoder.model_validate({"type": "keyvalue", "fields": [{"key": "T", "quantity": "temperature"}]}),
        frame_timeout=0.5,
    )
    assert dec.feed(b"T=2", 0.0).frames == []
    out = dec.feed(b"T=21.5\n", 1.0)  # after a quiet second: the stale "T=2" is dropped
    assert out.errors == ["truncated_frame"]
    assert [[m.value for m in f] for f in out.frames] == [[21.5]]


def test_overlong_line_is_dropped_until_the_next_newline() -> None:
    framer = LineFramer(max_length=16)
    out = framer.feed(b"x" * 40, 0.0)
    out2 = framer.feed(b"y" * 40 + b"\nok\n", 0.0)
    assert out.errors == ["line_too_long"] and out.frames == []
    assert out2.frames == [b"ok"] and out2.errors == []


def test_stale_partial_line_times_out_when_idle() -> None:
    framer = LineFramer(frame_timeout=0.2)
    framer.feed(b"$GPGGA,1", 0.0)
    assert framer.expire(1.0).errors == ["truncated_frame"]
    assert framer.feed(b"abc\n", 1.05).frames == [b"abc"]


# --- properties ------------------------------------------------------------------

chunk_sizes = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=50)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[pos : pos + n])
        pos, i = pos + n, i + 1
    return out


def _noise(excluded: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=30).map(lambda b: bytes(x for x in b if x not in excluded))


sds_frames = st.builds(
    lambda a, b, i: sds011_frame(a / 10, b / 10, i),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
pms_frames = st.builds(
    lambda w: pms5003_frame(w[0], w[1], w[2], tuple(w[3:9])),
    st.lists(st.integers(0, 65535), min_size=9, max_size=9),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_noise(b"\xaa"), sds_frames), max_size=12), _noise(b"\xaa"), chunk_sizes)
def test_sds011_every_frame_decoded_exactly_once(
    pairs: list[tuple[bytes, bytes]], tail: bytes, sizes: list[int]
) -> None:
    # Noise without the sync byte cannot start a frame, so the decoded frames must be exactly the sent ones.
    stream = b"".join(n + f for n, f in pairs) + tail
    framer = sds011_framer()
    got = [frame for chunk in _chunks(stream, sizes) for frame in framer.feed(chunk, 0.0).frames]
    assert got == [f for _, f in pairs]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_noise(b"\x42"), pms_frames), max_size=8), _noise(b"\x42"), chunk_sizes)
def test_pms5003_every_frame_decoded_exactly_once(
    pairs: list[tuple[bytes, bytes]], tail: bytes, sizes: list[int]
) -> None:
    stream = b"".join(n + f for n, f in pairs) + tail
    framer = pms5003_framer()
    got = [frame for chunk in _chunks(stream, sizes) for frame in framer.feed(chunk, 0.0).frames]
    assert got == [f for _, f in pairs]


gga = st.builds(
    lambda lat, lon, sats: nmea_sentence(
        f"GPGGA,120000,{lat // 60:02d}{lat % 60:02d}.000,N,{lon // 60:03d}{lon % 60:02d}.000,E,"
        f"1,{sats:02d},0.9,10.0,M,,M,,"
    ),
    st.integers(0, 89 * 60),
    st.integers(0, 179 * 60),
    st.integers(0, 24),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_noise(b"$\n"), gga), max_size=10),
    chunk_sizes,
)
def test_nmea_every_sentence_decoded_exactly_once(pairs: list[tuple[bytes, bytes]], sizes: list[int]) -> None:
    # Text noise is a line of its own (a garbled line), without '$' it can never pass as a sentence.
    stream = b"".join(n + b"\n" + s for n, s in pairs)
    dec = StreamDecoder(NMEADecoder(type="nmea", sentences=["GGA"]))
    frames = [f for chunk in _chunks(stream, sizes) for f in dec.feed(chunk, 0.0).frames]
    assert len(frames) == len(pairs)
    assert [int(next(m.value for m in f if m.quantity == "gps_satellites")) for f in frames] == [
        int(s.split(b",")[7]) for _, s in pairs
    ]


def _reference_sds011(stream: bytes) -> list[bytes]:
    """Whole-buffer greedy scan, written independently of the incremental framer."""
    out, i = [], 0
    while i + 10 <= len(stream):
        c = stream[i : i + 10]
        if c[0] == 0xAA and c[1] in (0xC0, 0xC5) and c[9] == 0xAB and sum(c[2:8]) & 0xFF == c[8]:
            out.append(c)
            i += 10
        else:
            i += 1
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=12), sds_frames, sds_frames.map(lambda f: f[: len(f) // 2])), max_size=15),
    chunk_sizes,
)
def test_sds011_matches_reference_on_arbitrary_bytes(parts: list[bytes], sizes: list[int]) -> None:
    # Any bytes at all (sync bytes, truncated frames): chunking never changes the result.
    stream = b"".join(parts)
    framer = sds011_framer()
    got = [frame for chunk in _chunks(stream, sizes) for frame in framer.feed(chunk, 0.0).frames]
    assert got == _reference_sds011(stream)


DECODERS: list[DecoderConfig] = [
    SDS011Decoder(type="sds011"),
    PMS5003Decoder(type="pms5003", particle_counts=True),
    NMEADecoder(type="nmea"),
    KeyValueDecoder.model_validate({"type": "keyvalue", "fields": [{"key": "T", "quantity": "temperature"}]}),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20), st.floats(0, 2))
def test_no_decoder_raises_on_arbitrary_bytes(chunks: list[bytes], step: float) -> None:
    for cfg in DECODERS:
        dec = StreamDecoder(cfg, frame_timeout=0.5)
        for i, chunk in enumerate(chunks):
            out = dec.feed(chunk, i * step)
            assert all(isinstance(k, str) and k for k in out.errors)


def test_simulator_encoder_matches_datasheet_vectors() -> None:
    # The simulator's encoders reproduce the synthetic examples of docs/protocols.md#5-serial-particulate-sensors.
    assert sds011_frame(12.3, 45.6, 0xA160) == bytes.fromhex("AA C0 7B 00 C8 01 A1 60 45 AB")
    assert pms5003_frame(0, 8, 8, (210, 70, 45, 30, 0, 0)) == PMS_REAL  # CF=1 equals atmospheric there
