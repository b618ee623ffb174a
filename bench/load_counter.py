"""The broker-side counter of bench_load.py: subscribes (QoS 1) and notes every SenML pack that arrives.

    python bench/load_counter.py --port P --topic 'load/#' --out arrivals.json

Runs in its own process so that its CPU is not counted as the daemon's. Prints ``subscribed`` once
the broker has acknowledged the subscription; when its standard input closes it writes
``{"packs": [[arrival_s, values, bt_s], ...]}`` to ``--out`` and exits.

A pack is not parsed as JSON, to keep the counter cheap at 50k values/s: each record has exactly one
``"n":`` key (names never contain a quote), and the pack's base time ``bt`` is in its first record.
All records of a pack share one timestamp (one pack per device per poll), so ``arrival - bt`` is the
latency from the poll to the broker of every value in it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

_BT = re.compile(rb'"bt":\s*([0-9.eE+-]+)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    packs: list[tuple[float, int, float]] = []
    unparsed = 0
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: Any, _rc: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal unparsed
        arrival = time.time()
        payload = msg.payload
        bt = _BT.search(payload, 0, 400)
        if bt is None:
            unparsed += 1
            return
        packs.append((arrival, payload.count(b'"n":'), float(bt.group(1))))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-load-counter-{args.port}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    if not subscribed.wait(15):
        raise SystemExit("load_counter: no SUBACK from the broker within 15 s")
    print("subscribed", flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    client.loop_stop()
    client.disconnect()
    args.out.write_text(json.dumps({"packs": packs, "unparsed": unparsed}))


if __name__ == "__main__":
    main()
