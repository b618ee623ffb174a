"""Sample readings shared by the sink tests, and the one-shot send they make of them."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.model import Reading
from gateway.sink import SendResult, Sink

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z


def reading(i: int = 0, **kw: object) -> Reading:
    """The i-th temperature of device th-1 at lab/gw1, 10 s apart; ``kw`` replaces fields."""
    base: dict[str, object] = {
        "ts_ns": T0 + i * 10_000_000_000,
        "site": "lab",
        "gateway": "gw1",
        "device": "th-1",
        "quantity": "temperature",
        "value": 20.0 + i / 4,
        "unit": "Cel",
    }
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


async def send_once(sink: Sink, batch: Sequence[Reading]) -> SendResult:
    """Open the sink, send one batch, close it (also when the send raises)."""
    await sink.open()
    try:
        return await sink.send(batch)
    finally:
        await sink.close()
