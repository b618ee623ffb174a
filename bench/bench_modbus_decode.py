"""Micro-benchmark: CPU to turn one read-register answer (PDU bytes) into a block's decoded values.

Run: .venv/bin/python bench/bench_modbus_decode.py [--registers 125] [--seconds 1]

No network: the same answer bytes go through pymodbus' client PDU decoder (``DecodePDU.decode``, what the
framer calls for every answer) and then the poller's block decoder, two ways:

- pymodbus: the stock response class (a ``struct.unpack`` per register into a list), the list handed
  over as ``list(pdu.registers)`` and packed again by ``BlockDecoder.decode``, as before
  drivers/modbus/responses.py;
- raw: our registered response classes keep the wire bytes; ``BlockDecoder.decode`` unpacks them once.

A last line does the same for a 2000-bit coil answer (ours unpacks bits by table lookup).

Prints us per answer and per register for each step; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import struct
import timeit
from collections.abc import Callable

from pymodbus.pdu import DecodePDU

from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode_plan import BlockDecoder
from gateway.drivers.modbus.planner import Span, plan_requests
from gateway.drivers.modbus.responses import BIT_RESPONSES, RAW_RESPONSES


def _per_call(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call: the best of 5 runs of about ``seconds / 5`` each."""
    number = max(1, int(seconds / 5 / max(timeit.timeit(fn, number=20) / 20, 1e-9)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registers", type=int, default=125, help="registers per answer, 1..125 (default 125)")
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1 s)")
    args = ap.parse_args()
    n = args.registers
    # One uint16 field per register, scaled (the bench_load profile's shape).
    fields = [
        FieldSpec.model_validate({"name": f"c{a}", "address": a, "type": "uint16", "quantity": "voltage",
                                  "scale": 0.1})
        for a in range(n)
    ]  # fmt: skip
    spans = [Span(f.table, f.address, f.span) for f in fields]
    (request,) = plan_requests(spans, max_registers=125, max_gap=0)
    block = BlockDecoder(request, fields, spans)
    rng = random.Random(1)
    frame = bytes([3, 2 * n]) + struct.pack(f">{n}H", *(rng.randrange(0x10000) for _ in range(n)))

    stock = DecodePDU(is_server=False)
    raw = DecodePDU(is_server=False)
    for cls in RAW_RESPONSES + BIT_RESPONSES:
        raw.register(cls)

    def stock_pdu() -> object:
        return stock.decode(frame)

    def raw_pdu() -> object:
        return raw.decode(frame)

    def stock_all() -> object:
        pdu = stock.decode(frame)
        assert pdu is not None
        return block.decode(list(pdu.registers))

    def raw_all() -> object:
        pdu = raw.decode(frame)
        assert pdu is not None
        return block.decode(pdu.raw)  # type: ignore[attr-defined]

    stock_out, raw_out = stock_all(), raw_all()
    assert stock_out == raw_out, "the two paths disagree"
    print(f"bench_modbus_decode: {n} registers per answer (fc 3), one scaled uint16 field per register")
    print(f"{'step':<42}{'pymodbus us':>12}{'raw us':>10}{'pymodbus us/reg':>17}{'raw us/reg':>12}")
    for name, a, b in (
        ("PDU decode (DecodePDU.decode)", stock_pdu, raw_pdu),
        ("PDU decode + block decode (values)", stock_all, raw_all),
    ):
        ta, tb = _per_call(a, args.seconds) * 1e6, _per_call(b, args.seconds) * 1e6
        print(f"{name:<42}{ta:>12.2f}{tb:>10.2f}{ta / n:>17.3f}{tb / n:>12.3f}")
    coils = bytes([1, 250]) + bytes(rng.randrange(256) for _ in range(250))  # 2000 bits, the protocol limit
    ta = _per_call(lambda: stock.decode(coils), args.seconds) * 1e6
    tb = _per_call(lambda: raw.decode(coils), args.seconds) * 1e6
    print(f"{'coils, 2000 bits (fc 1): PDU decode':<42}{ta:>12.2f}{tb:>10.2f}{ta / 2000:>17.3f}{tb / 2000:>12.3f}")


if __name__ == "__main__":
    main()
