"""CPU per value from the buffer to a real server: dispatcher + sink, frames whole vs expanded to readings.

Run: .venv/bin/python bench/bench_frame_dispatch.py [--devices 100] [--width 500] [--polls 2] [--tag-per-register]
Starts its own Mosquitto and VictoriaMetrics on loopback; a few seconds. The buffer
is filled first (not measured); then one dispatcher drains it into the mqtt sink
(``mode = "senml"``, QoS 1) or the influxdb sink, and the process's CPU time until
everything is acknowledged is divided by the values. "readings" is the same sink
with ``send_frames`` left to the base class (each frame expanded to readings and
sent through ``send``), i.e. the per-reading encoders. The buffer's ``take_frames``
(its own thread) is in the first figure; the second is the event loop's thread
alone: dispatcher, encoding, the client libraries. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_frame_encoding import make_frames, make_split_frames

from gateway.buffer import AsyncBuffer
from gateway.dispatch import SinkDispatcher
from gateway.frame import Frame, as_readings
from gateway.scheduling import Backoff
from gateway.sink import SendResult, Sink
from gateway.sinks.influxdb import InfluxDBSink, InfluxDBSinkConfig
from gateway.sinks.mqtt import MQTTSink, MQTTSinkConfig
from tests.servers import Mosquitto, VictoriaMetrics, running


class PerReadingMQTT(MQTTSink):
    async def send_frames(self, frames: Sequence[Frame]) -> SendResult:
        return await self.send(as_readings(frames))


class PerReadingInflux(InfluxDBSink):
    async def send_frames(self, frames: Sequence[Frame]) -> SendResult:
        return await self.send(as_readings(frames))


async def drain(sink: Sink, frames: list[Frame], workdir: Path) -> tuple[float, float]:
    """CPU seconds (of the process, of the event loop's thread) to deliver every value of ``frames``."""
    buffer = await AsyncBuffer.open(workdir / f"{sink.name}.sqlite", sync="normal")
    try:
        await buffer.set_sinks([sink.name])
        for start in range(0, len(frames), 50):
            await buffer.append(frames[start : start + 50])
        values = sum(len(f) for f in frames)
        dispatcher = SinkDispatcher(sink, buffer, backoff=Backoff(initial_s=0.01, cap_s=0.1))
        started, loop_started = time.process_time(), time.thread_time()
        task = asyncio.create_task(dispatcher.run())
        while dispatcher.selected_total < values:
            await asyncio.sleep(0.005)
        spent, loop_spent = time.process_time() - started, time.thread_time() - loop_started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return spent, loop_spent
    finally:
        await buffer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--polls", type=int, default=2)
    parser.add_argument("--tag-per-register", action="store_true", help="one frame per value (bench_load's profile)")
    args = parser.parse_args()
    poll = (make_split_frames if args.tag_per_register else make_frames)(args.devices, args.width)
    frames = [
        Frame(f.ts_ns + k * 1_000_000_000, f.site, f.gateway, f.device, f.fields, f.values, f.tags)
        for k in range(args.polls)
        for f in poll
    ]
    values = sum(len(f) for f in frames)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "mq").mkdir()
        (workdir / "vm").mkdir()
        with running(Mosquitto(workdir / "mq")) as mq, running(VictoriaMetrics(workdir / "vm")) as vm:
            mqtt_cfg = {"type": "mqtt", "host": "127.0.0.1", "port": mq.port, "mode": "senml", "batch_size": 5000}
            influx_cfg = {"type": "influxdb", "url": vm.url, "org": "o", "bucket": "b", "batch_size": 5000}
            cases: list[tuple[str, Sink]] = [
                ("mqtt senml, frames", MQTTSink(MQTTSinkConfig.model_validate({**mqtt_cfg, "name": "m1"}), site="s",
                                                gateway="g")),
                ("mqtt senml, readings", PerReadingMQTT(MQTTSinkConfig.model_validate({**mqtt_cfg, "name": "m2"}),
                                                        site="s", gateway="g")),
                ("influxdb, frames", InfluxDBSink(InfluxDBSinkConfig.model_validate({**influx_cfg, "name": "i1"}),
                                                  site="s", gateway="g")),
                ("influxdb, readings", PerReadingInflux(InfluxDBSinkConfig.model_validate({**influx_cfg, "name": "i2"}),
                                                        site="s", gateway="g")),
            ]  # fmt: skip
            print(f"{values:,} values ({args.devices} devices x {args.width}, {args.polls} polls), batch 5000 values")
            print(f"{'':<22} {'us CPU per value':>16} {'of which the event loop':>24}")
            for name, sink in cases:
                spent, loop_spent = await drain(sink, frames, workdir)
                print(f"{name:<22} {spent / values * 1e6:>16.2f} {loop_spent / values * 1e6:>24.2f}")


if __name__ == "__main__":
    asyncio.run(main())
