"""CPU per MQTT message through our sink: the fixed cost a device's SenML pack pays per poll.

    python bench/bench_mqtt_publish.py [--messages 5000] [--sizes 3000,25000] [--rounds 3] [--clients sink,aiomqtt]

A real Mosquitto on loopback (tests/servers.py); QoS 1, ``max_inflight`` 100, ``--messages`` prepared payloads
of each size on 100 topics, as the daemon publishes one SenML pack per device and poll. Prints this process's
CPU per message (encoding the payloads is not included) and the messages per second, for each client:

- ``sink``: ``MQTTSink`` as the daemon runs it (``gateway/mqtt_wire.py`` underneath);
- ``aiomqtt``: what the sink did before ``mqtt_wire`` (aiomqtt and paho, a pool of ``max_inflight`` publishers
  sharing one iterator over the batch), kept for comparison.

With the mqtt sink the daemon pays this once per device and poll, whatever the number of values in the pack.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import aiomqtt  # noqa: E402

from gateway.sink import Outcome  # noqa: E402
from gateway.sinks.mqtt import MQTTSink, MQTTSinkConfig  # noqa: E402
from tests.servers import Mosquitto, running  # noqa: E402


def prepared(messages: int, size: int) -> list[tuple[str, bytes]]:
    payload = b"x" * size
    return [(f"bench/gw/dev{i % 100:03d}", payload) for i in range(messages)]


async def sink_round(port: int, messages: int, size: int) -> tuple[float, float]:
    sink = MQTTSink(
        MQTTSinkConfig(type="mqtt", name="bench", host="127.0.0.1", port=port, qos=1, status_topic=""),
        site="bench",
        gateway="gw",
    )
    batch = prepared(messages, size)
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


async def aiomqtt_round(port: int, messages: int, size: int, max_inflight: int = 100) -> tuple[float, float]:
    batch = prepared(messages, size)
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=max_inflight) as client:
        client.pending_calls_threshold = 1 << 30

        async def publish_all(items: list[tuple[str, bytes]]) -> None:
            pending = iter(items)

            async def publisher() -> None:
                for topic, payload in pending:
                    await client.publish(topic, payload, qos=1, timeout=math.inf)

            await asyncio.gather(*(publisher() for _ in range(min(max_inflight, len(items)))))

        await publish_all(batch[:100])
        cpu, wall = time.process_time(), time.perf_counter()
        await publish_all(batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / messages * 1e6, messages / wall


ROUNDS = {"sink": sink_round, "aiomqtt": aiomqtt_round}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sizes", default="3000,25000", help="payload bytes, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="sink,aiomqtt", help=f"comma-separated, of {','.join(ROUNDS)}")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    clients = args.clients.split(",")
    with tempfile.TemporaryDirectory() as tmp, running(Mosquitto(Path(tmp))) as broker:
        print(f"{'client':>8} {'payload bytes':>13} {'us CPU per message (median, best)':>34} {'messages/s':>11}")
        for client in clients:
            for size in sizes:
                rounds = [asyncio.run(ROUNDS[client](broker.port, args.messages, size)) for _ in range(args.rounds)]
                cpu = [r[0] for r in rounds]
                rate = statistics.median(r[1] for r in rounds)
                print(f"{client:>8} {size:>13} {statistics.median(cpu):>22.1f} {min(cpu):>11.1f} {rate:>11,.0f}")


if __name__ == "__main__":
    main()
