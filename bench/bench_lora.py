"""LoRaWAN driver: uplinks/s decoded, and uplinks/s decoded and committed end to end.

Run: /work/venv/bin/python bench/bench_lora.py [--uplinks 5000]

1. Decode: ChirpStack and TTS JSON uplinks (pre-built by the simulator) through
   the driver's processing (parse, deduplicate, codec, readings), in process,
   no broker: uplinks/s per codec.
2. End to end: the simulator publishes a burst of QoS 1 uplinks to a real
   Mosquitto; the driver consumes them and commits every batch into a real
   durable buffer (gateway.buffer + gateway.writer group commit, sync=full,
   flush interval 0.2 s) before acknowledging. Measured with Mosquitto's
   default in-flight window and with ``max_inflight_messages 1000``, since
   acknowledging after the commit keeps messages in flight for a commit's
   latency. The single simulator publisher (one PUBACK awaited per message) is
   itself a limit, so these figures are lower bounds for the driver.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from gateway.drivers.lorawan.config import LoRaWANConfig
from gateway.drivers.lorawan.driver import LoRaWANDriver
from gateway.simulators.lorawan.ns import NetworkServerSim, Server, make_devices

from gateway.buffer import AsyncBuffer
from gateway.driver import DriverContext
from gateway.writer import BufferWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.servers: the Mosquitto runner
from tests.servers import Mosquitto, running

PROFILES = {"dragino_lht65": "lorawan-dragino-lht65", "decentlab": "lorawan-decentlab-dl-sht35"}


def make_driver(server: str, codec: str, devices: int, **extra: object) -> LoRaWANDriver:
    sims = make_devices(devices, codec)
    entries = [{"id": d.dev_eui, "profile": PROFILES[codec]} for d in sims] if codec in PROFILES else []
    config = LoRaWANConfig.model_validate(
        {
            "driver": "lorawan",
            "name": "bench",
            "server": server,
            "devices": entries,
            "default_codec": None if entries else codec,
            **extra,
        }
    )
    ctx = DriverContext(site="s", gateway="g", source="bench", driver="lorawan", logger=logging.getLogger("bench"))
    return LoRaWANDriver(config, ctx)


def bench_decode(n: int) -> None:
    print(f"1. decode (parse + dedup + codec + readings), {n} uplinks, 50 devices, in process")
    servers: tuple[Server, ...] = ("chirpstack", "ttn")
    for server in servers:
        for codec in ("cayenne_lpp", "dragino_lht65", "elsys", "decentlab"):
            sim = NetworkServerSim(host="", port=0, server=server, devices=make_devices(50, codec))
            messages = [m for _ in range(n) for m in sim.next_messages()]
            driver = make_driver(server, codec, 50)
            started = time.perf_counter()
            readings = sum(len(driver.process(topic, body, [])) for topic, body in messages)
            secs = time.perf_counter() - started
            print(f"   {server:10} {codec:14} {n / secs:9.0f} uplinks/s  ({readings / secs:8.0f} readings/s)")


async def bench_end_to_end(n: int, inflight: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, running(Mosquitto(Path(tmp) / "mq")) as server:
        mq = cast(Mosquitto, server)
        if inflight is not None:
            mq.stop()
            mq.conf.write_text(mq.conf.read_text() + f"max_inflight_messages {inflight}\n")
            mq.start()
        buffer = await AsyncBuffer.open(Path(tmp) / "buffer.sqlite", sync="full")
        writer = BufferWriter(buffer, flush_interval_s=0.2, flush_max_readings=10_000)
        writer_task = asyncio.create_task(writer.run())
        driver = make_driver("chirpstack", "cayenne_lpp", 50, host=mq.host, port=mq.port, client_id="bench")
        await driver.start()
        subscribed = asyncio.Event()
        driver.ctx.device_up_hook = lambda d, s, dev, up: subscribed.set() if up else None
        task = asyncio.create_task(driver.run(writer.emit))
        await asyncio.wait_for(subscribed.wait(), 10)
        sim = NetworkServerSim(
            host=mq.host, port=mq.port, server="chirpstack", devices=make_devices(50, "cayenne_lpp"), rate=0
        )
        started = time.perf_counter()
        await sim.run(n)
        published = time.perf_counter() - started
        while driver.counters["uplinks"] < n:
            await asyncio.sleep(0.01)
        secs = time.perf_counter() - started
        label = "default (20)" if inflight is None else str(inflight)
        print(
            f"   inflight {label:12} {n / secs:8.0f} uplinks/s committed "
            f"({writer.committed_total / secs:7.0f} readings/s; publishing alone took {published:.2f} s)"
        )
        task.cancel()
        writer_task.cancel()
        await asyncio.gather(task, writer_task, return_exceptions=True)
        await buffer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uplinks", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bench_decode(args.uplinks)
    print(f"2. end to end through Mosquitto into the durable buffer (sync=full), {args.uplinks} uplinks burst")
    asyncio.run(bench_end_to_end(args.uplinks, None))
    asyncio.run(bench_end_to_end(args.uplinks, 1000))


if __name__ == "__main__":
    main()
