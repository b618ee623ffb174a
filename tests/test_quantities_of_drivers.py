"""Every quantity a shipped LoRa codec emits is canonical, in its canonical unit."""

from __future__ import annotations

import random

from gateway.drivers.lorawan.codecs import DecodeResult, cayenne, elsys, make_codec

from gateway.quantities import QUANTITIES


def assert_canonical(measured: list[tuple[str, str]]) -> None:
    assert measured
    for quantity, unit in measured:
        assert quantity in QUANTITIES, f"{quantity} is not in gateway/quantities.py"
        assert unit == QUANTITIES[quantity].unit, f"{quantity}: {unit} instead of {QUANTITIES[quantity].unit}"


def test_every_cayenne_lpp_type_is_canonical() -> None:
    measured = [(q, u) for size, decode in cayenne.TYPES.values() for q, _, u in decode(bytes(size))]
    assert_canonical(measured)


def test_every_elsys_type_is_canonical() -> None:
    result = DecodeResult()
    for size, decode in elsys.TYPES.values():
        decode(bytes(size), result)
    assert_canonical([(m.quantity, m.unit) for m in result.values])


def test_dragino_lht65_payloads_are_canonical() -> None:
    codec = make_codec("dragino_lht65")
    rng = random.Random(3)
    measured = []
    for _ in range(300):
        result = codec.decode(rng.randbytes(11), 2)
        measured += [(m.quantity, m.unit) for m in result.values]
    assert_canonical(measured)
