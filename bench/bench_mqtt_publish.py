"""CPU per MQTT message through our sink: the fixed cost a device's SenML pack pays per poll.

    python bench/bench_mqtt_publish.py [--messages 5000] [--sizes 3000,25000] [--rounds 3]

A real Mosquitto on loopback (tests/servers.py); ``MQTTSink`` (QoS 1, its default ``max_inflight`` pool of
publishers) publishes ``--messages`` prepared payloads of each size on 100 topics, as the daemon publishes one
SenML pack per device and poll. Prints this process's CPU per message (the sink, aiomqtt and paho: encoding
the payloads is not included) and the messages per second. With the mqtt sink the daemon pays this once per
device and poll, whatever the number of values in the pack: at 100 values a pack it is about 1 us a value.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.sink import Outcome  # noqa: E402
from gateway.sinks.mqtt import MQTTSink, MQTTSinkConfig  # noqa: E402
from tests.servers import Mosquitto, running  # noqa: E402


async def one_round(port: int, messages: int, size: int) -> tuple[float, float]:
    sink = MQTTSink(
        MQTTSinkConfig(type="mqtt", name="bench", host="127.0.0.1", port=port, qos=1, status_topic=""),
        site="bench",
        gateway="gw",
    )
    payload = b"x" * size
    batch = [(f"bench/gw/dev{i % 100:03d}", payload) for i in range(messages)]
    try:
        warm = await sink._publish(batch[:100])  # connect outside the measurement
        assert warm.outcome is Outcome.ACCEPTED, warm
        cpu, wall = time.process_time(), time.perf_counter()
        result = await sink._publish(batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert result.outcome is Outcome.ACCEPTED, result
    finally:
        await sink.close()
    return cpu / messages * 1e6, messages / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sizes", default="3000,25000", help="payload bytes, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, running(Mosquitto(Path(tmp))) as broker:
        print(f"{'payload bytes':>13} {'us CPU per message (median, best)':>34} {'messages/s':>11}")
        for size in sizes:
            rounds = [asyncio.run(one_round(broker.port, args.messages, size)) for _ in range(args.rounds)]
            cpu = [r[0] for r in rounds]
            rate = statistics.median(r[1] for r in rounds)
            print(f"{size:>13} {statistics.median(cpu):>22.1f} {min(cpu):>11.1f} {rate:>11,.0f}")


if __name__ == "__main__":
    main()
