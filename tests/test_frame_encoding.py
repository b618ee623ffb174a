"""Frame encoders give byte for byte what the per-reading encoders give for the frame's readings."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.encoding import EncodingError, LineProtocolEncoder, dumps_compact, group_for_senml, senml_pack
from gateway.frame import Frame, FrameFields, as_readings
from gateway.frame_encoding import FrameLineProtocolEncoder, SenMLFrameEncoder
from gateway.model import Quality, Value
from gateway.tags import EMPTY_TAGS

T0 = 1_714_557_600_000_000_000


def frame(values: tuple[object, ...], *, device: str = "meter-1", ts_ns: int = T0, tags: object = EMPTY_TAGS,
          units: tuple[str, ...] | None = None, qualities: tuple[Quality, ...] | None = None) -> Frame:  # fmt: skip
    fields = FrameFields.of([f"voltage_l{i}" for i in range(len(values))], units or ("V",) * len(values))
    return Frame(ts_ns, "lab", "gw1", device, fields, values, tags, qualities)  # type: ignore[arg-type]


def old_senml(frames: list[Frame]) -> list[bytes]:
    return [dumps_compact(senml_pack(group)) for group in group_for_senml(as_readings(frames))]


def new_senml(frames: list[Frame]) -> list[bytes]:
    return [payload for _, payload in SenMLFrameEncoder().packs(frames)]


def test_a_frame_is_one_pack_and_its_lines_share_one_series_prefix() -> None:
    f = frame((230.1, 231, 229.75), tags=MappingProxyType({"phase": "3", "zone": "a b"}), units=("V", "%", "V"))
    [pack] = new_senml([f])
    assert pack.decode() == (
        '[{"bn":"lab:gw1:meter-1:","bt":1714557600.0,"n":"voltage_l0/phase/3/zone/a_b","u":"V","v":230.1},'
        '{"n":"voltage_l1/phase/3/zone/a_b","u":"%","v":231},{"n":"voltage_l2/phase/3/zone/a_b","u":"V","v":229.75}]'
    )
    assert FrameLineProtocolEncoder().encode_frames([f]).decode().splitlines() == [
        rf"voltage_l0,device=meter-1,gateway=gw1,phase=3,site=lab,unit=V,zone=a\ b value=230.1 {T0}",
        rf"voltage_l1,device=meter-1,gateway=gw1,phase=3,site=lab,unit=%,zone=a\ b value=231.0 {T0}",
        rf"voltage_l2,device=meter-1,gateway=gw1,phase=3,site=lab,unit=V,zone=a\ b value=229.75 {T0}",
    ]


def test_frames_of_one_device_and_instant_share_a_pack_as_readings_do() -> None:
    # Two tag sets of one device at one instant are two frames but one SenML pack (group_for_senml).
    frames = [
        frame((1.0, 2.0)),
        frame((3.0,), device="other"),
        frame((4.0,), tags=MappingProxyType({"bus": "2"})),
        frame((5.0, 6.0), ts_ns=T0 + 1),
        frame(()),  # no values: no pack, no line
    ]
    assert new_senml(frames) == old_senml(frames)
    assert len(new_senml(frames)) == 3
    enc = FrameLineProtocolEncoder()
    assert enc.encode_frames(frames) == LineProtocolEncoder().encode(as_readings(frames))


@pytest.mark.parametrize(
    "values",
    [(1.5, float("nan"), 2.0), (1.5, float("inf")), (True, "open", 3), (1.0, b"raw")],
)
def test_values_off_the_template_road_give_the_per_reading_answer(values: tuple[object, ...]) -> None:
    f = frame(values)
    for new, old in [
        (lambda: new_senml([f]), lambda: old_senml([f])),
        (lambda: FrameLineProtocolEncoder().encode_frames([f]), lambda: LineProtocolEncoder().encode(f.readings())),
    ]:
        try:
            expected: object = old()
        except EncodingError as exc:
            with pytest.raises(EncodingError) as err:
                new()
            assert err.value.reading == exc.reading  # the dispatcher's bisection finds the same value
        else:
            assert new() == expected


_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))
_values = st.one_of(_numbers, st.floats(), st.booleans(), st.text(max_size=4))
_tag_keys = st.one_of(_names, st.sampled_from(["bus", "site", "unit", "zone", "tag_unit", "v"]))


@st.composite
def frames(draw: st.DrawFn) -> list[Frame]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 6))
        fields = FrameFields.of(draw(st.lists(_names, min_size=n, max_size=n)),
                                draw(st.lists(st.sampled_from(["V", "%", "", "°C", 'a"b', "x\ny", "m/s"]),
                                              min_size=n, max_size=n)))  # fmt: skip
        # Half of the frames are plain numbers (the template road), half anything (mostly the per-reading road).
        plain = draw(st.booleans())
        values: Sequence[Value] = tuple(draw(st.lists(_numbers if plain else _values, min_size=n, max_size=n)))
        if values and all(type(v) is float for v in values) and draw(st.booleans()):
            values = array("d", values)  # as the Modbus poller and the buffer hold frames of floats
        grades = st.lists(st.sampled_from(list(Quality)), min_size=n, max_size=n).map(tuple)
        qualities = draw(st.none() | grades)
        tags = MappingProxyType(draw(st.dictionaries(_tag_keys, _names, max_size=3)))
        device = draw(st.sampled_from(["d1", "d 2", "d%3"]))
        ts = T0 + draw(st.integers(0, 2))
        out.append(Frame(ts, "s", "g", device, fields, values, tags, qualities))
    return out


def _outcome(encode: object) -> object:
    try:
        return encode()  # type: ignore[operator]
    except EncodingError as exc:
        return ("EncodingError", repr(exc.reading))  # repr: a NaN value read from an array is another NaN object


@settings(max_examples=300, deadline=None)
@given(frames())
def test_senml_of_frames_equals_senml_of_their_readings(batch: list[Frame]) -> None:
    assert _outcome(lambda: new_senml(batch)) == _outcome(lambda: old_senml(batch))


@settings(max_examples=300, deadline=None)
@given(frames())
def test_line_protocol_of_frames_equals_line_protocol_of_their_readings(batch: list[Frame]) -> None:
    new = FrameLineProtocolEncoder()
    assert _outcome(lambda: new.encode_frames(batch)) == _outcome(
        lambda: LineProtocolEncoder().encode(as_readings(batch))
    )
    # Warm caches (templates in FrameFields.memo, tag texts) give the same bytes again.
    assert _outcome(lambda: new.encode_frames(batch)) == _outcome(
        lambda: LineProtocolEncoder().encode(as_readings(batch))
    )


def test_a_layout_with_more_tag_sets_than_baked_templates_encodes_them_all_alike() -> None:
    # Each tag set of a layout gets a template with its name suffix written in, up to a bound; past it the
    # suffix is interleaved with the values. Both roads give the per-reading bytes.
    frames = [
        frame((1.5, 2, 3.25), device=f"m{i % 7}", tags=MappingProxyType({"ch": f"c{i:04d}"})) for i in range(2100)
    ]
    assert new_senml(frames) == old_senml(frames)
    assert len(frames[0].fields.memo["senml:baked"]) == 256
    assert FrameLineProtocolEncoder().encode_frames(frames) == LineProtocolEncoder().encode(as_readings(frames))
    assert len(frames[0].fields.memo["line_protocol:baked"]) == 2048  # its tag sets are per device: more


@pytest.mark.parametrize(
    ("quantities", "units", "tag"),
    [
        (("volt\x00age", "a"), ("V", "V"), "1"),
        (("voltage", "a"), ("V\x00", "V"), "1"),
        (("volt\x01age", "a"), ("V", "V"), "1"),
        (("voltage", "a"), ("V", "V\x02"), "1"),
        (("voltage", "a"), ("V", "V"), "x\x01y"),
        (("voltage", "a"), ("V", "V"), "x\x02y"),
    ],
)
def test_a_name_holding_a_mark_still_encodes_as_its_readings_do(
    quantities: tuple[str, ...], units: tuple[str, ...], tag: str
) -> None:
    # The baked lines take the timestamp where a NUL stands, and the tags where \x01 and \x02 stand: a mark
    # of the frame's own must not get them (Hypothesis found the quantity case).
    fields = FrameFields.of(list(quantities), units)
    f = Frame(T0, "lab", "gw1", "m1", fields, (1.5, 2), MappingProxyType({"ch": tag, "zone": "z"}))
    f2 = Frame(T0, "lab", "gw1", "m1", f.fields, (2.5, 3), MappingProxyType({"ch": "2"}))
    batch = [f, f2]
    assert _outcome(lambda: FrameLineProtocolEncoder().encode_frames(batch)) == _outcome(
        lambda: LineProtocolEncoder().encode(as_readings(batch))
    )
