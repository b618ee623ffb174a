"""The ``stdout`` sink: one JSON object per reading per line, for debugging and piping."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Literal

from gateway.model import Reading
from gateway.sink import Outcome, SendResult, Sink, SinkConfig


class StdoutSinkConfig(SinkConfig):
    type: Literal["stdout"] = "stdout"


def reading_to_json(r: Reading) -> str:
    return json.dumps(
        {
            "ts_ns": r.ts_ns,
            "site": r.site,
            "gateway": r.gateway,
            "device": r.device,
            "quantity": r.quantity,
            "value": r.value,
            "unit": r.unit,
            "tags": dict(r.tags),
            "quality": r.quality.name.lower(),
        },
        separators=(",", ":"),
    )


class StdoutSink(Sink):
    config_model = StdoutSinkConfig

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        try:
            sys.stdout.write("".join(reading_to_json(r) + "\n" for r in batch))
            sys.stdout.flush()
        except (OSError, ValueError) as exc:  # closed pipe: keep the readings
            return SendResult(Outcome.RETRY, f"stdout: {exc}")
        return SendResult.ok()
